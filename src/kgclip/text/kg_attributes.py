"""Visual attributes of entities read off the knowledge graph alone, without an LLM.

The method (method.md §4) asks an LLM for 1-10 visual attribute instances per category and a
search query for each. Reviewers asked why the graph's own structure was not used; this is
that answer, and kgclip's offline default. Two sources, both in WordNet:

1. **Part meronyms** of the entity's synset and, inherited, of its hypernyms (a robin has the
   wing, beak and feather of bird.n.01), kept only when they are visible in a photo: a part
   is classified by the nearest of a few hypernym classes (internal organs, glands, tissue,
   cavities and vessels are hidden; teeth, skin and orifices such as the beak are visible).
   Part-of is followed one hop further (tree -> trunk -> bark), and a whole class of parts
   (plant.n.02 has "plant part") is replaced by its basic-level kinds (leaf, branch, root...).
2. **The gloss**: colours, patterns and textures, sizes and shapes, habitats and behaviours
   named in the description, and parts in "with ..." / "having ..." phrases
   ("with grey furry ears and coat"); clauses about food, hosts and look-alikes are skipped.

Every word list, class list, limit and query template lives in data/kg_attributes.toml, so
the rules here stay generic. docs/stages/kg-attributes.md describes the rules and numbers.
"""

from __future__ import annotations

import re
import statistics
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgclip.kg.wordnet import HYPERNYM, HYPONYM, INSTANCE_HYPERNYM, PART_HOLONYM, PART_MERONYM, WordNet
from kgclip.tables import Attribute, Entity

DEFAULT_VOCABULARY = Path(__file__).parent / "data" / "kg_attributes.toml"

# Rule names recorded in Attribute.method.
MERONYM = "kg:meronym"
INHERITED_MERONYM = "kg:inherited-meronym"
SUB_MERONYM = "kg:sub-meronym"
PART_KIND = "kg:part-kind"
GLOSS_PART = "kg:gloss-part"
GLOSS_METHODS = {
    "color": "kg:gloss-color",
    "pattern": "kg:gloss-pattern",
    "size": "kg:gloss-size",
    "habitat": "kg:gloss-habitat",
    "behavior": "kg:gloss-behavior",
    "other": "kg:gloss-other",
}
SLOTS = ("color", "pattern", "part", "behavior", "size", "habitat", "other")
WORD_SLOTS = ("color", "pattern", "size", "habitat", "behavior", "other")
# Slots whose words describe how a part looks; only these carry over to coordinated parts.
LOOK_SLOTS = ("color", "pattern")

# WordNet 3.0's lexicographer files by number (lexnames(5WN)); Debian ships no `lexnames`.
LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

_TOKEN = re.compile(r"[a-z]+(?:['-][a-z]+)*|[;:,.()]")
_BREAKS = frozenset(";:,.()")
_WORD = re.compile(r"\w+")


class VocabularyError(ValueError):
    """A vocabulary file that does not have the expected shape."""


@dataclass(frozen=True)
class Word:
    """A vocabulary entry: the slot it fills, its template form, and the word it stands for."""

    slot: str
    form: str
    canonical: str


@dataclass(frozen=True)
class Meronyms:
    symbols: tuple[str, ...]
    max_distance: int
    stop_at: tuple[str, ...]
    lexfiles: frozenset[str]
    hidden_classes: tuple[str, ...]
    visible_classes: tuple[str, ...]
    part_class_min_hyponyms: int
    kind_max_depth: int
    kind_min_popularity: int
    sub_part_hops: int
    sub_part_lexfiles: frozenset[str]


@dataclass(frozen=True)
class Vocabulary:
    """The parsed data/kg_attributes.toml: category sets, templates, meronym settings, word lists."""

    max_per_category: int
    category_order: dict[str, tuple[str, ...]]
    category_slots: dict[str, dict[str, str]]
    templates: dict[str, dict[str, str]]
    meronyms: Meronyms
    words: dict[str, Word]
    tones: frozenset[str]
    suffixes: dict[str, tuple[str, ...]]
    max_unknown_modifiers: int
    negators: frozenset[str]
    foreign: tuple[tuple[str, ...], ...]
    triggers: frozenset[str]
    conjunctions: frozenset[str]
    alternatives: frozenset[str]
    stopwords: frozenset[str]
    fillers: frozenset[str]
    part_modifiers: frozenset[str]
    whole_body: frozenset[str]
    needs_modifier: frozenset[str]
    part_nouns: dict[str, str]
    part_adjectives: dict[str, str]
    source: str = ""
    wikidata: dict[str, str] = field(default_factory=dict)  # property -> "slot.form"

    def template(self, category_set: str, key: str) -> str:
        own = self.templates.get(category_set, {})
        return own.get(key) or self.templates["default"][key]

    def category(self, category_set: str, slot: str) -> str | None:
        if category_set not in self.category_slots:
            known = ", ".join(sorted(self.category_slots))
            raise ValueError(f"unknown category set {category_set!r} (known: {known})")
        return self.category_slots[category_set].get(slot)


def load_vocabulary(path: Path | None = None) -> Vocabulary:
    """The vocabulary at `path`, by default the packaged data/kg_attributes.toml."""
    path = Path(path) if path is not None else DEFAULT_VOCABULARY
    with path.open("rb") as f:
        raw = tomllib.load(f)
    try:
        return parse_vocabulary(raw, source=str(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise VocabularyError(f"{path}: {exc}") from exc


def parse_vocabulary(raw: dict[str, Any], source: str = "") -> Vocabulary:
    sets = raw["category_sets"]
    templates = {name: dict(table) for name, table in raw["templates"].items()}
    for name, table in templates.items():
        for key, text in table.items():
            if "{entity}" not in text or "{attribute}" not in text:
                raise ValueError(f"template {name}.{key} must contain {{entity}} and {{attribute}}")
            if text != text.lower():
                raise ValueError(f"template {name}.{key} must be lower case: {text!r}")
    for name, cs in sets.items():
        unknown = set(cs["slots"]) - set(SLOTS)
        if unknown:
            raise ValueError(f"category set {name}: unknown slots {sorted(unknown)}")
        missing = set(cs["slots"].values()) - set(cs["order"])
        if missing:
            raise ValueError(f"category set {name}: categories {sorted(missing)} missing from order")
    m = raw["meronyms"]
    gloss = raw["gloss"]
    words: dict[str, Word] = {}
    for slot in WORD_SLOTS:
        for form, table in gloss.get(slot, {}).items():
            if not isinstance(table, dict):
                continue
            if f"{slot}.{form}" not in templates["default"]:
                raise ValueError(f"gloss.{slot}.{form}: no template {slot}.{form} in [templates.default]")
            for canonical, others in table.items():
                for surface in (canonical, *others):
                    words.setdefault(surface.lower(), Word(slot, form, canonical.lower()))
    part = gloss["part"]
    nouns: dict[str, str] = {}
    adjectives: dict[str, str] = {}
    for canonical, irregular in part["nouns"].items():
        canonical = canonical.lower()
        for surface in (canonical, *_plurals(canonical)):
            nouns.setdefault(surface, canonical)
        for surface in _ed_forms(canonical):
            adjectives.setdefault(surface, canonical)
        for surface in irregular:
            target = adjectives if surface.endswith("ed") else nouns
            target.setdefault(surface.lower(), canonical)
    hints = {prop: str(key) for prop, key in raw.get("wikidata", {}).items()}
    for prop, key in hints.items():
        if key not in templates["default"]:
            raise ValueError(f"wikidata.{prop}: no template {key} in [templates.default]")
    return Vocabulary(
        wikidata=hints,
        max_per_category=int(raw.get("max_per_category", 10)),
        category_order={name: tuple(cs["order"]) for name, cs in sets.items()},
        category_slots={name: dict(cs["slots"]) for name, cs in sets.items()},
        templates=templates,
        meronyms=Meronyms(
            symbols=tuple(m["symbols"]),
            max_distance=int(m["max_distance"]),
            stop_at=tuple(m["stop_at"]),
            lexfiles=frozenset(m["lexfiles"]),
            hidden_classes=tuple(m["hidden_classes"]),
            visible_classes=tuple(m["visible_classes"]),
            part_class_min_hyponyms=int(m["part_class_min_hyponyms"]),
            kind_max_depth=int(m["kind_max_depth"]),
            kind_min_popularity=int(m["kind_min_popularity"]),
            sub_part_hops=int(m["sub_part_hops"]),
            sub_part_lexfiles=frozenset(m["sub_part_lexfiles"]),
        ),
        words=words,
        tones=frozenset(gloss["color"].get("tones", ())),
        suffixes={slot: tuple(gloss.get(slot, {}).get("suffixes", ())) for slot in WORD_SLOTS},
        max_unknown_modifiers=int(part.get("max_unknown_modifiers", 0)),
        negators=frozenset(gloss["negators"]),
        foreign=tuple(tuple(phrase.lower().split()) for phrase in gloss["foreign"]),
        triggers=frozenset(part["triggers"]),
        conjunctions=frozenset(part["conjunctions"]),
        alternatives=frozenset(part["alternatives"]),
        stopwords=frozenset(part["stopwords"]),
        fillers=frozenset(part["fillers"]),
        part_modifiers=frozenset(part["modifiers"]),
        whole_body=frozenset(part["whole_body"]),
        needs_modifier=frozenset(part.get("needs_modifier", ())),
        part_nouns=nouns,
        part_adjectives=adjectives,
        source=source,
    )


def _plurals(noun: str) -> list[str]:
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return [noun + "es"]
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return [noun[:-1] + "ies"]
    return [noun + "s"]


def _ed_forms(noun: str) -> list[str]:
    """The "-ed" adjectives of a part noun: tailed, eyed, bellied, finned (short CVC words double)."""
    if noun.endswith("e"):
        return [noun + "d"]
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return [noun[:-1] + "ied"]
    forms = [noun + "ed"]
    if re.fullmatch(r"[^aeiou]*[aeiou][^aeiouwxy]", noun):
        forms.append(noun + noun[-1] + "ed")
    return forms


# --------------------------------------------------------------------------------------------
# Rule 1: meronyms


@dataclass(frozen=True, slots=True, order=True)
class _Part:
    """A part candidate, in sort order: rank (hypernym distance + part hops), then the commoner word
    first (minus its SemCor count), then holder and pointer order."""

    rank: int
    unpopularity: int
    holder_order: int
    order: int
    offset: int
    method: str
    via: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Own:
    """A part of one synset: hops below it, order, part offset, kind (direct, kind, sub), the parts it
    hangs from, and minus its SemCor count."""

    hops: int
    order: int
    offset: int
    kind: str
    via: tuple[int, ...]
    unpopularity: int


class _Graph:
    """WordNet look-ups the meronym rule repeats, memoized for one `kg_attributes` call."""

    def __init__(self, wn: WordNet, vocab: Vocabulary) -> None:
        self.wn = wn
        self.cfg = vocab.meronyms
        self.lexfiles = {i for i, name in enumerate(LEXNAMES) if name in self.cfg.lexfiles}
        self.stop_at = {self._offset(n, "meronyms.stop_at") for n in self.cfg.stop_at}
        hidden = {self._offset(n, "meronyms.hidden_classes"): False for n in self.cfg.hidden_classes}
        visible = {self._offset(n, "meronyms.visible_classes"): True for n in self.cfg.visible_classes}
        self.classes = hidden | visible
        self._ancestors: dict[int, frozenset[int]] = {}
        self._hypernyms: dict[int, tuple[int, ...]] = {}
        self._holonyms: dict[int, tuple[int, ...]] = {}
        self._visible: dict[int, bool] = {}
        self._is_class: dict[int, bool] = {}
        self._kinds: dict[int, tuple[int, ...]] = {}
        self._own: dict[int, tuple[_Own, ...]] = {}
        self.sub_lexfiles = {i for i, name in enumerate(LEXNAMES) if name in self.cfg.sub_part_lexfiles}
        self.organism = wn.synset("organism.n.01").offset

    def _offset(self, name: str, where: str) -> int:
        try:
            return self.wn.synset(name).offset
        except KeyError as exc:
            raise VocabularyError(f"{where}: {exc}") from None

    def hypernyms(self, offset: int) -> tuple[int, ...]:
        found = self._hypernyms.get(offset)
        if found is None:
            found = self._hypernyms[offset] = self.wn.by_offset(offset).related(HYPERNYM, INSTANCE_HYPERNYM)
        return found

    def ancestors(self, offset: int) -> frozenset[int]:
        """Every hypernym of `offset`, transitively, over all paths (itself excluded)."""
        found = self._ancestors.get(offset)
        if found is None:
            out: set[int] = set()
            for h in self.hypernyms(offset):
                out.add(h)
                out |= self.ancestors(h)
            found = self._ancestors[offset] = frozenset(out)
        return found

    def visible(self, offset: int) -> bool:
        """A part is visible when its lexicographer file is allowed and the nearest listed class on its
        hypernym paths (breadth first) is a visible one or there is none; a tie goes to hidden."""
        known = self._visible.get(offset)
        if known is None:
            known = self._visible[offset] = self._classify(offset)
        return known

    def _classify(self, offset: int) -> bool:
        if self.wn.by_offset(offset).lexfile not in self.lexfiles:
            return False
        frontier, seen = [offset], {offset}
        while frontier:
            verdicts = {self.classes[o] for o in frontier if o in self.classes}
            if verdicts:
                return verdicts == {True}
            nxt = []
            for o in frontier:
                for h in self.hypernyms(o):
                    if h not in seen:
                        seen.add(h)
                        nxt.append(h)
            frontier = nxt
        return True

    def is_part_class(self, offset: int) -> bool:
        known = self._is_class.get(offset)
        if known is None:
            limit = self.cfg.part_class_min_hyponyms
            count = 0
            for count, _ in enumerate(self.wn.hyponym_closure(self.wn.by_offset(offset)), 1):
                if count >= limit:
                    break
            known = self._is_class[offset] = count >= limit
        return known

    def kinds(self, offset: int) -> tuple[int, ...]:
        """Basic-level kinds of a part class: popular visible hyponyms a few steps down, commonest first."""
        known = self._kinds.get(offset)
        if known is None:
            found: dict[int, int] = {}
            frontier = [offset]
            for _ in range(self.cfg.kind_max_depth):
                frontier = [c for o in frontier for c in self.wn.by_offset(o).related(HYPONYM)]
                for c in frontier:
                    if self.wn.popularity(c) >= self.cfg.kind_min_popularity and self.visible(c):
                        found.setdefault(c, self.wn.popularity(c))
            ranked = sorted(found, key=lambda c: (-found[c], self.wn.by_offset(c).name))
            known = self._kinds[offset] = tuple(ranked)
        return known

    def organism_holonyms(self, offset: int) -> tuple[int, ...]:
        """Part holonyms of `offset` that are organisms (trunk -> tree.n.01)."""
        found = self._holonyms.get(offset)
        if found is None:
            holonyms = self.wn.by_offset(offset).related(PART_HOLONYM)
            found = tuple(h for h in holonyms if self.organism in self.ancestors(h))
            self._holonyms[offset] = found
        return found

    def own_parts(self, holder: int) -> tuple[_Own, ...]:
        """One synset's visible parts: direct meronyms (hops 0), kinds of part classes (hops 1), and parts
        of parts (hops 1 and more, zoological or botanical only: noun.body would bring in human anatomy)."""
        known = self._own.get(holder)
        if known is not None:
            return known
        out: list[_Own] = []
        for part in self.wn.by_offset(holder).related(*self.cfg.symbols):
            if not self.visible(part):
                continue
            if self.is_part_class(part):
                out.extend(
                    self._own_part(1, len(out) + i, kind, "kind", ())
                    for i, kind in enumerate(self.kinds(part))
                )
                continue
            out.append(self._own_part(0, len(out), part, "direct", ()))
        frontier = [p for p in out if p.kind == "direct"]
        for hops in range(1, self.cfg.sub_part_hops + 1):
            nxt = []
            for parent in frontier:
                for sub in self.wn.by_offset(parent.offset).related(PART_MERONYM):
                    if (
                        self.visible(sub)
                        and self.wn.by_offset(sub).lexfile in self.sub_lexfiles
                        and not self.is_part_class(sub)
                    ):
                        own = self._own_part(hops, len(out), sub, "sub", (*parent.via, parent.offset))
                        out.append(own)
                        nxt.append(own)
            frontier = nxt
        known = self._own[holder] = tuple(out)
        return known

    def _own_part(self, hops: int, order: int, offset: int, kind: str, via: tuple[int, ...]) -> _Own:
        return _Own(hops, order, offset, kind, via, -self.wn.popularity(offset))

    def parts(self, offset: int) -> list[_Part]:
        """Visible parts of the synset and of its hypernyms up to `max_distance` steps, nearest first."""
        entity_line = self.ancestors(offset) | {offset}
        holders: list[tuple[int, int]] = []
        seen = {offset}
        frontier = [offset]
        for distance in range(self.cfg.max_distance + 1):
            holders.extend((distance, h) for h in frontier)
            nxt = []
            for o in frontier:
                for h in self.hypernyms(o):
                    if h not in seen and h not in self.stop_at:
                        seen.add(h)
                        nxt.append(h)
            frontier = nxt
        out: list[_Part] = []
        for holder_order, (distance, holder) in enumerate(holders):
            for own in self.own_parts(holder):
                # A kind, or a part of a part, that WordNet attaches to other organisms is not this one's
                # (trunk is tree.n.01's, so no tulip trunk; wing is also the bat's and the insect's, so the
                # bird-only flight feather does not pass through it).
                attached = (own.offset,) if own.kind == "kind" else own.via
                if any(h not in entity_line for o in attached for h in self.organism_holonyms(o)):
                    continue
                if own.kind == "sub":
                    method = SUB_MERONYM
                elif own.kind == "kind":
                    method = PART_KIND
                else:
                    method = MERONYM if distance == 0 else INHERITED_MERONYM
                out.append(
                    _Part(
                        distance + own.hops,
                        own.unpopularity,
                        holder_order,
                        own.order,
                        own.offset,
                        method,
                        own.via,
                    )
                )
        out.sort()
        # A kind of a part already named at least as near is redundant: caudal appendage (a tail) and
        # pennon (a wing) are parts of the same ancestors as tail and wing.
        nearest: dict[int, int] = {}
        for p in out:
            nearest.setdefault(p.offset, p.rank)
        return [
            p for p in out if not any(nearest.get(h, p.rank + 1) <= p.rank for h in self.hypernyms(p.offset))
        ]

    def names_of(self, offset: int) -> set[str]:
        """Lower-cased lemmas of a part and of its direct hypernyms (caudal appendage -> tail)."""
        out = set()
        for o in (offset, *self.hypernyms(offset)):
            out.update(lemma.lower().replace("_", " ") for lemma in self.wn.by_offset(o).lemmas)
        return out

    def part_text(self, offset: int, names: set[str]) -> str | None:
        """The part's first lemma as text; when WordNet names the part after the entity (olive.n.01,
        the fruit of olive.n.02), the part's hypernym's name ("fruit") instead; None if still the name."""
        synset = self.wn.by_offset(offset)
        text = synset.lemmas[0].replace("_", " ")
        if text.lower() in names:
            for h in self.hypernyms(offset):
                text = self.wn.by_offset(h).lemmas[0].replace("_", " ")
                break
        return None if text.lower() in names else text


# --------------------------------------------------------------------------------------------
# Rule 2: the gloss


@dataclass(slots=True)
class _Token:
    """A gloss token and what the vocabulary makes of it.

    kind: `word` (an attribute word: `word` set), `part` (a part noun: `canonical` set),
    `partadj` (modifier-part compound: `text` and `canonical`), `mod` (a part-phrase modifier),
    `tone`, `trigger`, `conj`, `filler`, `neg`, `stop` (a function word), `break` (punctuation,
    removed clauses), `other` (unknown: maybe a modifier nobody listed).
    """

    text: str
    kind: str
    word: Word | None = None
    canonical: str = ""
    used: bool = False


@dataclass(frozen=True, slots=True)
class _Found:
    """A gloss finding: slot, form, attribute text, de-duplication key."""

    slot: str
    form: str
    text: str
    key: str


class _Gloss:
    def __init__(self, vocab: Vocabulary) -> None:
        self.v = vocab
        self.colors = {s for s, w in vocab.words.items() if w.slot == "color"}
        self.look = {s for s, w in vocab.words.items() if w.slot in ("color", "pattern", "size")}
        self.modifier_words = self.look | vocab.part_modifiers | vocab.tones
        self.foreign: dict[str, list[tuple[str, ...]]] = {}
        for phrase in vocab.foreign:
            self.foreign.setdefault(phrase[0], []).append(phrase)

    # ---- tokens

    def tokens(self, text: str) -> list[_Token]:
        raw = _TOKEN.findall(text.lower())
        tokens = [self._classify(t) for t in raw]
        self._drop_foreign(tokens)
        return self._merge_colors(tokens)

    def _classify(self, t: str) -> _Token:
        v = self.v
        if t in _BREAKS:
            return _Token(t, "break")
        word = v.words.get(t)
        if word is not None and "-" not in t:
            return _Token(t, "word", word=word)
        if t in v.part_nouns:
            return _Token(t, "part", canonical=v.part_nouns[t])
        if t in v.negators:
            return _Token(t, "neg")
        if t in v.triggers:
            return _Token(t, "trigger")
        if t in v.conjunctions:
            return _Token(t, "conj")
        if t in v.tones:
            return _Token(t, "tone")
        if t in v.part_modifiers:
            return _Token(t, "mod")
        if t in v.fillers:
            return _Token(t, "filler")
        if t in v.stopwords:
            return _Token(t, "stop")
        if "-" in t:
            return self._compound(t, word)
        return _Token(t, "other")

    def _compound(self, t: str, word: Word | None) -> _Token:
        """A hyphenated token counts only as a whole: a listed word, a colour ("rust-red",
        "black-and-white"), a modified look word ("dark-spotted"), or a part adjective
        ("red-breasted" -> part phrase "red breast")."""
        pieces = t.split("-")
        if word is not None:
            return _Token(t, "word", word=word)
        last, head = pieces[-1], pieces[:-1]
        text = t.replace("-and-", " and ")
        mods_ok = head[0] != "and" and all(
            p in self.modifier_words or p == "and" or p.endswith("ly") for p in head
        )
        if last in self.colors:
            return _Token(text, "word", word=Word("color", "adjective", text))
        for slot, suffixes in self.v.suffixes.items():
            if last in suffixes:
                return _Token(text, "word", word=Word(slot, "adjective", text))
        if last in self.look and mods_ok:
            w = self.v.words[last]
            return _Token(text, "word", word=Word(w.slot, w.form, text))
        if last in self.v.part_adjectives and mods_ok:
            canonical = self.v.part_adjectives[last]
            return _Token(
                f"{' '.join(head)} {canonical}".replace("-and-", " and "), "partadj", canonical=canonical
            )
        return _Token(t, "other")

    def _drop_foreign(self, tokens: list[_Token]) -> None:
        """Blank out clauses about other things: from a foreign phrase to the next punctuation."""
        texts = [t.text for t in tokens]
        i = 0
        while i < len(tokens):
            phrases = self.foreign.get(texts[i], ())
            if not any(tuple(texts[i : i + len(p)]) == p for p in phrases):
                i += 1
                continue
            while i < len(tokens) and not (tokens[i].kind == "break" and tokens[i].text in ",;:.()"):
                tokens[i] = _Token(tokens[i].text, "break")
                i += 1

    def _merge_colors(self, tokens: list[_Token]) -> list[_Token]:
        """Tone + colour ("dark brown") and colour "and" colour ("black and white") become one colour."""
        out: list[_Token] = []
        for t in tokens:
            if _is_color(t) and out and out[-1].kind == "tone":
                tone = out.pop()
                t = _Token(f"{tone.text} {t.text}", "word", word=Word("color", "adjective", ""))
            if _is_color(t) and len(out) >= 2 and out[-1].text == "and" and _is_color(out[-2]):
                out.pop()
                first = out.pop()
                t = _Token(f"{first.text} and {t.text}", "word", word=Word("color", "adjective", ""))
            out.append(t)
        for t in out:
            if t.word is not None and t.word.slot == "color" and not t.word.canonical:
                t.word = Word("color", "adjective", t.text)
        return out

    # ---- findings

    def findings(self, text: str) -> tuple[list[_Found], set[str]]:
        """Attribute findings in gloss order (part phrases first claim their words, then single words),
        and the parts the gloss says are missing ("tailless" -> tail)."""
        tokens = self.tokens(text)
        absent = {
            self.v.part_nouns[t.text[:-4]]
            for t in tokens
            if t.kind == "other" and t.text.endswith("less") and t.text[:-4] in self.v.part_nouns
        }
        found: list[tuple[int, _Found]] = []
        for i, t in enumerate(tokens):
            if t.kind == "trigger" and not _negated(tokens, i):
                found.extend(self._phrase(tokens, i + 1))
            elif t.kind == "partadj" and not _negated(tokens, i):
                t.used = True
                found.append((i, self._part(t.text, t.canonical)))
                if t.canonical in self.v.whole_body:
                    pieces = t.text.split()[:-1]
                    found.extend((i, f) for f in self._transfer((p, self.v.words.get(p)) for p in pieces))
        for i, t in enumerate(tokens):
            if t.kind != "word" or t.used or _negated(tokens, i) or self._modifies_part(tokens, i):
                continue
            w = t.word
            assert w is not None
            found.append((i, _Found(w.slot, w.form, w.canonical, w.canonical)))
        found.sort(key=lambda x: x[0])
        return [f for _, f in found], absent

    def _part(self, text: str, canonical: str) -> _Found:
        words = text.split()
        key = " ".join([*words[:-1], canonical])
        return _Found("part", "phrase", text, key)

    def _transfer(self, modifiers: Iterable[tuple[str, Word | None]]) -> Iterator[_Found]:
        """The colour, pattern and size words of a whole-body part ("grey furry coat") describe the
        entity itself."""
        for _text, w in modifiers:
            if w is not None and w.slot in ("color", "pattern", "size"):
                yield _Found(w.slot, w.form, w.canonical, w.canonical)

    def _is_modifier(self, t: _Token) -> bool:
        return t.kind in ("mod", "tone") or (
            t.kind == "word" and t.word is not None and t.word.slot in ("color", "pattern", "size")
        )

    def _phrase(self, tokens: list[_Token], i: int) -> list[tuple[int, _Found]]:
        """Parts in a trigger phrase: conjuncts of modifiers + part nouns, joined by and/or/commas.

        A bare conjunct after "and" shares the previous one's colour and pattern words ("grey furry
        ears and coat" -> also "grey furry coat"); a modifier-only conjunct before "or" shares the
        next one's part ("red or yellow flowers" -> "red flowers", "yellow flowers").
        """
        out: list[tuple[int, _Found]] = []
        shared: list[_Token] = []
        pending: list[list[_Token]] = []
        n = len(tokens)
        while i < n:
            start = i
            mods: list[_Token] = []
            nouns: list[_Token] = []
            unknown = 0
            while i < n:
                t = tokens[i]
                if self._is_modifier(t):
                    mods.append(t)
                elif t.kind == "other" and unknown < self.v.max_unknown_modifiers and not _adverb(t):
                    mods.append(t)
                    unknown += 1
                elif not (t.kind == "filler" or _adverb(t)):
                    break
                i += 1
            while i < n and tokens[i].kind == "part":
                nouns.append(tokens[i])
                i += 1
            if nouns and i < n and tokens[i].kind == "other" and not _adverb(tokens[i]):
                break  # the part noun modifies an unknown head ("leaf axes"): not a part phrase
            if nouns:
                if not mods and shared:
                    mods = list(shared)
                for group in [*pending, mods]:
                    if not group and len(nouns) == 1 and nouns[0].canonical in self.v.needs_modifier:
                        continue  # "with body" says nothing
                    text = " ".join([m.text for m in group] + [t.text for t in nouns])
                    out.append((start, self._part(text, nouns[-1].canonical)))
                    if nouns[-1].canonical in self.v.whole_body:
                        out.extend((start, f) for f in self._transfer((m.text, m.word) for m in group))
                for t in (*mods, *nouns, *(m for group in pending for m in group)):
                    t.used = True
                shared = [
                    m for m in mods if m.kind == "tone" or (m.word is not None and m.word.slot in LOOK_SLOTS)
                ]
                pending = []
            elif i < n and tokens[i].text in self.v.alternatives and mods:
                known = [m for m in mods if m.kind in ("word", "mod")]
                if known:
                    pending.append(known)
            else:
                break
            if i < n and (tokens[i].kind == "conj" or tokens[i].text == ","):
                i += 1
                continue
            break
        return out

    def _modifies_part(self, tokens: list[_Token], i: int) -> bool:
        """A look word right before a part noun (through other modifiers, adverbs and at most a few unknown
        words) describes that part, not the entity ("yellow flowers", "fuzzy edible fruit"), unless the
        part covers the whole entity ("grey coat")."""
        if not self._is_modifier(tokens[i]):
            return False
        j, unknown = i + 1, 0
        while j < len(tokens):
            t = tokens[j]
            if t.kind == "other" and not _adverb(t):
                unknown += 1
                if unknown > self.v.max_unknown_modifiers:
                    return False
            elif not (self._is_modifier(t) or _adverb(t) or t.kind == "conj"):
                break
            j += 1
        return j < len(tokens) and tokens[j].kind == "part" and tokens[j].canonical not in self.v.whole_body


def _adverb(t: _Token) -> bool:
    return t.kind == "other" and t.text.endswith("ly")


def _is_color(t: _Token) -> bool:
    return t.kind == "word" and t.word is not None and t.word.slot == "color"


def _negated(tokens: list[_Token], i: int) -> bool:
    return i > 0 and tokens[i - 1].kind == "neg"


# --------------------------------------------------------------------------------------------
# Putting it together


def _names(entity: Entity) -> set[str]:
    return {n.lower() for n in (entity.name, *entity.aliases, *entity.common_names) if n}


def _padded(text: str) -> str:
    """Lower-cased words between single spaces, padded, for whole-word containment tests."""
    return f" {' '.join(_WORD.findall(text.lower()))} "


def build_query(template: str, entity_name: str, attribute: str) -> str:
    """The query for one attribute: the template with the entity's name as spelled (proper nouns keep
    their capitals); an attribute that already names the entity is its own query."""
    if _padded(entity_name) in _padded(attribute):
        return attribute
    return template.format(entity=entity_name, attribute=attribute)


def kg_attributes(
    entities: list[Entity],
    wordnet: WordNet,
    vocab: Vocabulary,
    category_set: Callable[[Entity], str],
) -> list[Attribute]:
    """Visual attributes of each entity from its WordNet meronyms and its gloss, with queries.

    Entities in input order; per entity, categories in the set's order; per category, at most
    `vocab.max_per_category` attributes, most specific first (gloss parts, then own parts, then
    parts inherited from nearer hypernyms). Attributes are unique per entity, case-insensitively.
    Entities without a WordNet synset get gloss attributes only.
    """
    graph = _Graph(wordnet, vocab)
    gloss = _Gloss(vocab)
    out: list[Attribute] = []
    for entity in entities:
        out.extend(_entity_attributes(entity, wordnet, vocab, graph, gloss, category_set(entity)))
    return out


def _entity_attributes(
    entity: Entity, wn: WordNet, vocab: Vocabulary, graph: _Graph, gloss: _Gloss, cset: str
) -> list[Attribute]:
    names = _names(entity)
    padded_name = _padded(entity.name)
    by_category: dict[str, list[Attribute]] = {c: [] for c in vocab.category_order[cset]}
    seen: set[str] = set()

    def add(slot: str, form: str, text: str, key: str, method: str) -> None:
        category = vocab.category(cset, slot)
        if category is None or len(by_category[category]) >= vocab.max_per_category:
            return
        key = key.lower()
        if key in seen or key in names or text.lower() in names or _padded(text) in padded_name:
            return
        seen.add(key)
        query = build_query(vocab.template(cset, f"{slot}.{form}"), entity.name, text)
        by_category[category].append(Attribute(entity.id, category, text, query, method))

    found, absent = gloss.findings(entity.description)
    for f in found:
        method = GLOSS_PART if f.slot == "part" else GLOSS_METHODS[f.slot]
        add(f.slot, f.form, f.text, f.key, method)
    part_category = vocab.category(cset, "part")
    if entity.wordnet and part_category is not None:
        offset = wn.synset(entity.wordnet).offset
        for part in graph.parts(offset):
            if len(by_category[part_category]) >= vocab.max_per_category:
                break
            if absent and any(graph.names_of(o) & absent for o in (part.offset, *part.via)):
                continue
            text = graph.part_text(part.offset, names)
            if text is not None:
                add("part", "meronym", text, text, part.method)
    return [a for category in vocab.category_order[cset] for a in by_category[category]]


def attribute_stats(entities: list[Entity], attributes: list[Attribute]) -> dict[str, Any]:
    """Coverage numbers for a run: entities with an attribute, per-entity mean and median, per rule
    and per category counts."""
    per_entity = Counter(a.entity_id for a in attributes)
    counts = [per_entity.get(e.id, 0) for e in entities]
    entities_per_method: dict[str, set[str]] = {}
    for a in attributes:
        entities_per_method.setdefault(a.method, set()).add(a.entity_id)
    return {
        "entities": len(entities),
        "with_attributes": sum(1 for c in counts if c),
        "attributes": len(attributes),
        "per_entity": {
            "mean": round(statistics.fmean(counts), 2) if counts else 0.0,
            "median": statistics.median(counts) if counts else 0,
            "max": max(counts, default=0),
        },
        "per_method": dict(sorted(Counter(a.method for a in attributes).items())),
        "entities_per_method": {m: len(ids) for m, ids in sorted(entities_per_method.items())},
        "per_category": dict(sorted(Counter(a.category for a in attributes).items())),
    }


def hint_attributes(
    entities: list[Entity], vocab: Vocabulary, category_set: Callable[[Entity], str]
) -> list[Attribute]:
    """Attributes from Wikidata's own statements (`Entity.kg_hints`, method.md §4): P462 colour,
    P527 parts, P186 material, P1552 characteristic, as mapped in the vocabulary's [wikidata]."""
    out = []
    for entity in entities:
        cset = category_set(entity)
        for prop, key in vocab.wikidata.items():
            slot = key.split(".", 1)[0]
            category = vocab.category(cset, slot)
            if category is None:
                continue
            for value in entity.kg_hints.get(prop, ()):
                query = build_query(vocab.template(cset, key), entity.name, value.lower())
                out.append(Attribute(entity.id, category, value.lower(), query, f"kg:wikidata-{prop}"))
    return out
