"""A direct reader of the WordNet 3.0 noun database (the wndb files), without nltk.

nltk cannot open Debian's `/usr/share/wordnet` (no `lexnames` file, and its path checks refuse
the folder), and it takes about 3 s to load. The wndb format is simple: every synset line
starts at the byte offset that is its id, so this reader keeps `data.noun` in memory as bytes
and parses a synset only when it is asked for. A living-things selection touches about 20k of
the 82k noun synsets, so that is most of the speed.

Synset names follow nltk exactly (`dog.n.01`, `banana.n.02`): the first lemma, lower-cased,
and the 1-based position of the synset in that lemma's `index.noun` sense list. Offsets are
WordNet 3.0 offsets, which are also ImageNet wnids (`n02084071`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEBIAN_DIR = Path("/usr/share/wordnet")
NLTK_DATA_DIRS = (
    "~/nltk_data",
    "/usr/share/nltk_data",
    "/usr/local/share/nltk_data",
    "/usr/lib/nltk_data",
    "/usr/local/lib/nltk_data",
)
REQUIRED = ("data.noun", "index.noun")
OPTIONAL = ("index.sense",)

HYPERNYM = "@"
INSTANCE_HYPERNYM = "@i"
HYPONYM = "~"
INSTANCE_HYPONYM = "~i"
PART_MERONYM = "%p"
MEMBER_MERONYM = "%m"
SUBSTANCE_MERONYM = "%s"
PART_HOLONYM = "#p"
MEMBER_HOLONYM = "#m"
SUBSTANCE_HOLONYM = "#s"

_WNID = re.compile(r"^n(\d{8})$")
# A noun sense key (`lemma%1:lexfile:lexid:head:headid`) with a non-zero tag count; one pass
# over the whole file in C is several times faster than splitting 207k lines in Python.
_TAGGED_NOUN_SENSE = re.compile(rb"^([^ %\n]+)%1:[^ \n]* (\d{8}) \d+ ([1-9]\d*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Sense:
    """One noun sense of a lemma: its synset, its 1-based place in the lemma's sense list (index.noun
    orders senses by frequency) and how often SemCor tagged the lemma with it (index.sense)."""

    offset: int
    number: int
    tag_count: int


class WordNetNotFound(RuntimeError):
    """No WordNet 3.0 database where we looked; the message says how to install one."""


class UnknownSynset(KeyError):
    """A name, wnid or offset that is not a noun synset of this database."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, slots=True)
class Synset:
    """One noun synset. `pointers` holds the synset-level noun pointers by symbol, in file order."""

    offset: int
    name: str
    lexfile: int
    lemmas: tuple[str, ...]
    pointers: dict[str, tuple[int, ...]]
    gloss: str

    @property
    def wnid(self) -> str:
        return f"n{self.offset:08d}"

    @property
    def definition(self) -> str:
        """The gloss without its quoted examples, as nltk's `definition()` gives it."""
        return re.sub(r'"[^"]*"', "", self.gloss).strip().strip("; ")

    @property
    def examples(self) -> list[str]:
        return re.findall(r'"([^"]*)"', self.gloss)

    @property
    def is_instance(self) -> bool:
        return INSTANCE_HYPERNYM in self.pointers

    def related(self, *symbols: str) -> tuple[int, ...]:
        """Target offsets of the given pointer symbols, symbol by symbol, each in file order."""
        return tuple(o for s in symbols for o in self.pointers.get(s, ()))


def candidate_dirs() -> list[Path]:
    """Where a database is looked for when no folder is configured: Debian's, then nltk_data trees."""
    roots = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    roots += NLTK_DATA_DIRS
    return [DEBIAN_DIR] + [Path(r).expanduser() / "corpora" / "wordnet" for r in roots]


def has_database(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED)


def find_database(path: Path | None = None) -> Path:
    """The folder to read: `path` if given (it must hold the files), else the first candidate that does."""
    if path is not None:
        folder = Path(path).expanduser()
        if has_database(folder):
            return folder
        raise WordNetNotFound(_not_found_message([folder]))
    searched = candidate_dirs()
    for folder in searched:
        if has_database(folder):
            return folder
    raise WordNetNotFound(_not_found_message(searched))


def _not_found_message(searched: list[Path]) -> str:
    looked = "\n".join(f"  {p}" for p in searched)
    return (
        f"WordNet 3.0 not found: no folder with {' and '.join(REQUIRED)} among\n{looked}\n"
        "Install it with `apt-get install wordnet-base wordnet-sense-index` (Debian/Ubuntu), "
        "or put an nltk_data tree's corpora/wordnet folder (unzipped) under $NLTK_DATA or ~/nltk_data, "
        "or set entities.wordnet.path to a folder holding the wndb files."
    )


def database_files(folder: Path) -> list[Path]:
    """The files this reader uses, for fingerprints: the required ones and those optional ones present."""
    return [folder / n for n in REQUIRED] + [folder / n for n in OPTIONAL if (folder / n).is_file()]


class WordNet:
    """Noun synsets of one wndb folder, parsed on demand and cached."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.warnings: list[str] = []
        self._data = (self.folder / "data.noun").read_bytes()
        self._index = _read_index(self.folder / "index.noun")
        self._senses: dict[str, tuple[int, ...]] = {}
        self._synsets: dict[int, Synset] = {}
        self._tags: dict[tuple[str, int], int] | None = None
        self._popularity: dict[int, int] = {}

    def synset(self, ref: str | int) -> Synset:
        """A synset by nltk-style name (`dog.n.01`), wnid (`n02084071`), `wn:n02084071` or offset."""
        if isinstance(ref, int):
            return self.by_offset(ref)
        ref = ref.removeprefix("wn:")
        match = _WNID.match(ref)
        if match:
            return self.by_offset(int(match.group(1)))
        return self.by_name(ref)

    def by_name(self, name: str) -> Synset:
        """Resolve like nltk's `wn.synset`: any lemma's n-th noun sense, so domestic_dog.n.01 is dog.n.01."""
        parts = name.lower().rsplit(".", 2)
        if len(parts) != 3 or parts[1] != "n" or not parts[2].isdigit():
            raise UnknownSynset(f"not a noun synset name (lemma.n.NN): {name!r}")
        lemma, _, number = parts
        offsets = self.senses(lemma)
        sense = int(number)
        if not 1 <= sense <= len(offsets):
            raise UnknownSynset(f"no noun synset {name!r} in {self.folder}")
        return self.by_offset(offsets[sense - 1])

    def by_offset(self, offset: int) -> Synset:
        cached = self._synsets.get(offset)
        if cached is not None:
            return cached
        synset = self._parse(offset)
        self._synsets[offset] = synset
        return synset

    def _parse(self, offset: int) -> Synset:
        columns, _, gloss = self._line(offset).partition(" | ")
        fields = columns.split(" ")
        lemmas = tuple(fields[4 : 4 + 2 * int(fields[3], 16) : 2])
        pointers: dict[str, list[int]] = {}
        for symbol, target in _noun_pointers(fields):
            pointers.setdefault(symbol, []).append(int(target))
        return Synset(
            offset=offset,
            name=self._name(offset, lemmas[0]),
            lexfile=int(fields[1]),
            lemmas=lemmas,
            pointers={s: tuple(t) for s, t in pointers.items()},
            gloss=gloss.strip(),
        )

    def _line(self, offset: int) -> str:
        at_line_start = offset == 0 or (offset > 0 and self._data[offset - 1 : offset] == b"\n")
        end = self._data.find(b"\n", offset) if at_line_start else -1
        if end < 0 or self._data[offset : offset + 8] != b"%08d" % offset:
            raise UnknownSynset(f"no noun synset at offset {offset} (wnid n{offset:08d}) in {self.folder}")
        return self._data[offset:end].decode("utf-8")

    def hyponyms(self, offset: int) -> tuple[int, ...]:
        """Hyponyms then instance hyponyms, as `related` gives them, without building a Synset.

        Explaining a dropped subtree walks 10k synsets (all of person.n.01) that are never kept,
        so skipping their names and glosses is a third of the stage's parse time.
        """
        cached = self._synsets.get(offset)
        if cached is not None:
            return cached.related(HYPONYM, INSTANCE_HYPONYM)
        pointers = _noun_pointers(self._line(offset).partition(" | ")[0].split(" "))
        found: dict[str, list[int]] = {HYPONYM: [], INSTANCE_HYPONYM: []}
        for symbol, target in pointers:
            if symbol in found:
                found[symbol].append(int(target))
        return (*found[HYPONYM], *found[INSTANCE_HYPONYM])

    def _name(self, offset: int, first_lemma: str) -> str:
        lemma = first_lemma.lower()
        offsets = self.senses(lemma)
        if offset not in offsets:
            raise UnknownSynset(f"index.noun lists no sense of {lemma!r} at offset {offset}")
        return f"{lemma}.n.{offsets.index(offset) + 1:02d}"

    def senses(self, lemma: str) -> tuple[int, ...]:
        """The noun synset offsets of a lower-cased lemma (underscores for spaces), in sense order."""
        cached = self._senses.get(lemma)
        if cached is None:
            line = self._index.get(lemma.encode("utf-8"))
            # `pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...`
            fields = line.split() if line else []
            cached = tuple(map(int, fields[len(fields) - int(fields[1]) :])) if fields else ()
            self._senses[lemma] = cached
        return cached

    def lemmas(self) -> list[str]:
        """Every noun lemma of index.noun (lower-case, underscores for spaces), in file order."""
        return [key.decode("utf-8") for key in self._index]

    def noun_senses(self, lemma: str) -> tuple[Sense, ...]:
        """Every noun sense of a lemma (any case; spaces or underscores) in sense order, with the
        tag count of this lemma in that sense: "flag" names an emblem 31 times, the iris once."""
        key = lemma.lower().replace(" ", "_")
        return tuple(
            Sense(offset, number, self.tag_count(key, offset))
            for number, offset in enumerate(self.senses(key), start=1)
        )

    def tag_count(self, lemma: str, offset: int) -> int:
        """SemCor tag count of one sense key: a lower-cased lemma (underscores) in one synset."""
        return self._tag_counts().get((lemma, offset), 0)

    def popularity(self, offset: int) -> int:
        """SemCor tag count of the synset: the sum over its sense keys in index.sense (0 without it)."""
        self._tag_counts()
        return self._popularity.get(offset, 0)

    def _tag_counts(self) -> dict[tuple[str, int], int]:
        if self._tags is None:
            self._tags = self._read_tags()
            for (_, offset), count in self._tags.items():
                self._popularity[offset] = self._popularity.get(offset, 0) + count
        return self._tags

    def _read_tags(self) -> dict[tuple[str, int], int]:
        path = self.folder / "index.sense"
        if not path.is_file():
            self.warnings.append(
                f"{path} is missing (package wordnet-sense-index): every popularity and tag count is 0"
            )
            return {}
        return {
            (lemma.decode("utf-8"), int(offset)): int(count)
            for lemma, offset, count in _TAGGED_NOUN_SENSE.findall(path.read_bytes())
        }

    def hyponym_closure(self, synset: Synset, instances: bool = False) -> Iterator[Synset]:
        """Every synset below `synset` once, depth first in file order (the synset itself excluded)."""
        symbols = (HYPONYM, INSTANCE_HYPONYM) if instances else (HYPONYM,)
        seen = {synset.offset}
        stack = list(reversed(synset.related(*symbols)))
        while stack:
            offset = stack.pop()
            if offset in seen:
                continue
            seen.add(offset)
            child = self.by_offset(offset)
            yield child
            stack.extend(reversed(child.related(*symbols)))


def _noun_pointers(fields: list[str]) -> Iterator[tuple[str, str]]:
    """(symbol, target offset) of a synset line's synset-level pointers to nouns, in file order.

    Lexical pointers (source/target not 0000) relate single lemmas, which nltk keeps apart too.
    """
    first = 5 + 2 * int(fields[3], 16)
    stop = first + 4 * int(fields[first - 1])
    # Pointers are `symbol offset pos source/target` quadruples; strided slices beat a loop of slices.
    quads = zip(
        fields[first:stop:4],
        fields[first + 1 : stop : 4],
        fields[first + 2 : stop : 4],
        fields[first + 3 : stop : 4],
        strict=True,
    )
    return (
        (symbol, target)
        for symbol, target, pos, source_target in quads
        if pos == "n" and source_target == "0000"
    )


def _read_index(path: Path) -> dict[bytes, bytes]:
    """index.noun as lemma -> the rest of its line; lines are only parsed when a lemma is asked for.

    The licence header lines start with two spaces, so they all land on the key b"", dropped here.
    """
    index = dict(line.split(b" ", 1) for line in path.read_bytes().splitlines())
    index.pop(b"", None)
    return index


@functools.lru_cache(maxsize=4)
def _open(folder: Path, stamp: tuple[tuple[int, int], ...]) -> WordNet:
    return WordNet(folder)


def open_wordnet(path: Path | None = None) -> WordNet:
    """The reader for `path` (or the default database), shared within a process while its files are unchanged.

    Stages run back to back in one process, and each would otherwise pay the load again.
    """
    folder = find_database(path).resolve()
    stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in database_files(folder))
    return _open(folder, stamp)
