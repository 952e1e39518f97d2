"""The texts a zero-shot classifier averages per class: prompt templates filled with class names.

A *name style* says which name of a class goes into the templates: its display name, WordNet's
first lemma or all its lemmas, the Wikidata common name, the scientific name, the taxonomic string,
or scientific plus common. The names come from the evaluation set itself (`ClassInfo`) and from
what the knowledge graph knows (`KGNames`: WordNet 3.0 plus, optionally, a harvest's
`entities.parquet`). A class that lacks its style's name uses its display name and is counted in
`ClassTexts.fallbacks`, because a "common name" score over classes that silently kept their Latin
names would not measure what it says. A *prompt set* is a bundled template file, the set's own
templates, or a user file; every template holds "{c}".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pyarrow.parquet as pq

from kgclip.eval.sets import CLASSIFICATION, RANKS, ClassInfo, EvalSet
from kgclip.kg.wordnet import UnknownSynset, WordNet, open_wordnet
from kgclip.kg.wordnet_select import query_string

STYLES = ("name", "lemma", "lemmas", "common", "scientific", "taxonomic", "scicom")
PROMPT_SETS = ("none", "openai_imagenet", "simple_imagenet", "inat", "cub", "default", "set")
DEFAULT_FALLBACK = "openai_imagenet"  # what `default` means for a set without templates (CLIP_benchmark's)
PLACEHOLDER = "{c}"
ENTITIES_FILE = "entities.parquet"
_ENTITY_COLUMNS = ("wordnet", "name", "aliases", "wikidata", "taxon_name", "common_names")
_WORDNET_STYLES = ("lemma", "lemmas")


class ClassTextsError(ValueError):
    """A name style, prompt set or names file that cannot be used: the message names the problem."""


@dataclass
class ClassTexts:
    """Per class, every text whose embeddings are averaged (templates x names), and the fallbacks."""

    style: str
    prompts: str  # the prompt set's name, or the user file's name
    texts: list[list[str]]
    fallbacks: int  # classes that lacked this style's name and used their display name
    fallback_classes: list[str] = field(default_factory=list)  # their display names, for the log


@dataclass(frozen=True)
class KGEntry:
    """What a harvest's entities.parquet knows of one WordNet synset."""

    name: str
    aliases: tuple[str, ...] = ()
    wikidata: str | None = None
    taxon_name: str | None = None
    common_names: tuple[str, ...] = ()


class KGNames:
    """What the graph knows of classes by wnid: WordNet lemmas and a harvest's entity names.

    WordNet is opened on the first lemma asked for, so styles that never need it (a set's own
    common names) work on a machine without a WordNet database.
    """

    def __init__(self, entries: dict[str, KGEntry] | None = None, wordnet_path: Path | None = None) -> None:
        self.entries = entries or {}
        self.wordnet_path = wordnet_path
        self._wordnet: WordNet | None = None

    @classmethod
    def load(cls, workdir: Path | None = None, wordnet_path: Path | None = None) -> KGNames:
        """WordNet (the default database unless `wordnet_path`) plus `workdir`'s entities.parquet if given."""
        entries = read_entities(Path(workdir) / ENTITIES_FILE) if workdir is not None else {}
        return cls(entries, wordnet_path)

    def wordnet(self) -> WordNet:
        if self._wordnet is None:
            self._wordnet = open_wordnet(self.wordnet_path)
        return self._wordnet

    def lemmas(self, wnid: str | None) -> tuple[str, ...]:
        """The synset's lemmas as people write them (underscores to spaces); () for no or an unknown wnid."""
        if not wnid:
            return ()
        try:
            synset = self.wordnet().synset(wnid)
        except UnknownSynset:
            return ()
        return tuple(query_string(lemma) for lemma in synset.lemmas)

    def entry(self, wnid: str | None) -> KGEntry | None:
        return self.entries.get(wnid) if wnid else None


def read_entities(path: Path) -> dict[str, KGEntry]:
    """A harvest's entities indexed by WordNet wnid; entities without a synset cannot match a class wnid."""
    if not path.is_file():
        raise ClassTextsError(f"{path}: missing (the entities stage's output of a kgclip work directory)")
    schema = pq.read_schema(path)
    missing = [c for c in _ENTITY_COLUMNS if c not in schema.names]
    if missing:
        raise ClassTextsError(f"{path}: not an entities table (no column {', '.join(missing)})")
    rows = pq.read_table(path, columns=list(_ENTITY_COLUMNS)).to_pylist()
    return {
        row["wordnet"]: KGEntry(
            name=row["name"],
            aliases=tuple(row["aliases"] or ()),
            wikidata=row["wikidata"],
            taxon_name=row["taxon_name"],
            common_names=tuple(row["common_names"] or ()),
        )
        for row in rows
        if row["wordnet"]
    }


def load_templates(prompts: str, evalset: EvalSet | None = None) -> tuple[str, tuple[str, ...]]:
    """(label, templates) of a prompt set: a bundled name, `set` (the set's own), `default` (the set's
    own if it has any, else the 80 OpenAI templates, as CLIP_benchmark falls back to ImageNet's), or a
    template file. The label names what was used, so `default` never appears in a result.

    Bundled names win over a file of the same name in the current folder.
    """
    if prompts == "default":
        prompts = "set" if evalset is not None and evalset.templates else DEFAULT_FALLBACK
    if prompts == "set":
        return "set", _set_templates(evalset)
    if prompts in PROMPT_SETS:
        text = (resources.files("kgclip.eval") / "prompts" / f"{prompts}.txt").read_text(encoding="utf-8")
        return prompts, tuple(line for line in text.splitlines() if line)
    return _user_templates(Path(prompts).expanduser(), prompts)


def _set_templates(evalset: EvalSet | None) -> tuple[str, ...]:
    if evalset is None or not evalset.templates:
        name = evalset.name if evalset is not None else "no evaluation set"
        raise ClassTextsError(
            f"prompt set 'set': {name} has no templates of its own "
            f"(a wds folder keeps them in zeroshot_classification_templates.txt); choose one of "
            f"{', '.join(p for p in PROMPT_SETS if p != 'set')} or a template file"
        )
    bad = [t for t in evalset.templates if PLACEHOLDER not in t]
    if bad:
        raise ClassTextsError(f"{evalset.source}: template {bad[0]!r} has no {PLACEHOLDER} placeholder")
    return tuple(evalset.templates)


def _user_templates(path: Path, spec: str) -> tuple[str, tuple[str, ...]]:
    if not path.is_file():
        raise ClassTextsError(
            f"prompt set {spec!r}: not one of {', '.join(PROMPT_SETS)} and no such file "
            f"(a template file has one template per line, each with {PLACEHOLDER})"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassTextsError(f"{path}: cannot read ({exc})") from None
    templates = []
    for number, line in enumerate(lines, 1):
        template = line.strip()
        if not template:
            continue
        if PLACEHOLDER not in template:
            raise ClassTextsError(f"{path}:{number}: template {template!r} has no {PLACEHOLDER} placeholder")
        templates.append(template)
    if not templates:
        raise ClassTextsError(f"{path}: no templates (one per line, each with {PLACEHOLDER})")
    return path.name, tuple(templates)


def class_texts(evalset: EvalSet, style: str, prompts: str, kg: KGNames | None) -> ClassTexts:
    """Every class's texts for one (name style, prompt set); `kg` may be None for styles without WordNet."""
    if style not in STYLES:
        raise ClassTextsError(f"unknown name style {style!r}: expected one of {', '.join(STYLES)}")
    if evalset.task != CLASSIFICATION:
        raise ClassTextsError(f"{evalset.name}: class texts need a classification set, not {evalset.task}")
    if style in _WORDNET_STYLES and kg is None:
        raise ClassTextsError(f"name style {style!r} reads WordNet: pass KGNames.load()")
    label, templates = load_templates(prompts, evalset)
    texts: list[list[str]] = []
    fallback_classes: list[str] = []
    for info in evalset.classes:
        names = style_names(style, info, kg)
        if not names:
            fallback_classes.append(info.name)
            names = [info.name]
        texts.append([fill(template, name) for template in templates for name in names])
    return ClassTexts(style, label, texts, len(fallback_classes), fallback_classes)


def fill(template: str, name: str) -> str:
    """The template with its placeholder replaced; other braces stay as written (no str.format)."""
    return template.replace(PLACEHOLDER, name)


def style_names(style: str, info: ClassInfo, kg: KGNames | None) -> list[str]:
    """The class's names in this style, or [] when it has none (the caller falls back to the display name)."""
    entry = kg.entry(info.wnid) if kg is not None else None
    if style == "name":
        return [info.name]
    if style == "lemma":
        return list(kg.lemmas(info.wnid)[:1]) if kg is not None else []
    if style == "lemmas":
        lemmas = kg.lemmas(info.wnid) if kg is not None else ()
        return _unique([*lemmas, *(entry.aliases if entry else ()), *info.aliases]) if lemmas else []
    if style == "common":
        return _present(common_name(info, entry))
    if style == "scientific":
        return _present(scientific_name(info, entry))
    if style == "taxonomic":
        return _present(taxonomic_string(info.taxonomy))
    scientific, common = scientific_name(info, entry), common_name(info, entry)
    return [f"{scientific} with common name {common}"] if scientific and common else []


def common_name(info: ClassInfo, entry: KGEntry | None) -> str | None:
    """The set's common name, else the entity's first Wikidata common name (P1843), else its label
    when the entity is linked to Wikidata (a WordNet-only entity's label is just its lemma)."""
    if info.common:
        return info.common
    if entry is None:
        return None
    if entry.common_names:
        return entry.common_names[0]
    return entry.name if entry.wikidata else None


def scientific_name(info: ClassInfo, entry: KGEntry | None) -> str | None:
    return info.scientific or (entry.taxon_name if entry else None) or None


def taxonomic_string(taxonomy: dict[str, str]) -> str | None:
    """"Animalia Chordata Aves Passeriformes Corvidae Corvus corax": the ranks present, kingdom first.

    A species given as a binomial after its genus contributes only its epithet, so the genus is
    not written twice (BioCLIP's taxon text).
    """
    values = [taxonomy[rank].strip() for rank in RANKS if taxonomy.get(rank, "").strip()]
    genus, species = taxonomy.get("genus", "").strip(), taxonomy.get("species", "").strip()
    if genus and species.startswith(genus + " "):
        values[-1] = species[len(genus) + 1 :]
    return " ".join(values) or None


def _present(name: str | None) -> list[str]:
    return [name] if name else []


def _unique(names: Iterable[str]) -> list[str]:
    """Names in order, blanks dropped and case variants merged (first casing seen wins)."""
    seen: set[str] = set()
    out = []
    for name in names:
        key = name.strip().casefold()
        if key and key not in seen:
            seen.add(key)
            out.append(name.strip())
    return out

