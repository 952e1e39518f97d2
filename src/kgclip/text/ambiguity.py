"""Homonyms of query strings, found in WordNet and told apart with the knowledge graph.

A search engine, or a caption, reads a bare string in its most common sense: "chess" is the
board game before it is Bromus secalinus, "hobby" a pastime before it is a falcon. The method
only resolved names shared *inside* the selection, by taking the first synset; this module
looks at every noun sense of the string (index.noun gives them in order, index.sense their
SemCor tag counts) and says whether the entity is what the bare string means.

A string's senses are those of every lemma it may be read as: its spellings ("jack-o'-lantern",
"butterfly fish" and "seahorse" are one string to a reader) and, for a plural, its singular
("trumpets" is what a trumpet is, several times). It is ambiguous for an entity unless the
entity's sense is the only one that competes, or carries at least `dominant_share` of the
string's tagged uses when SemCor tagged it at least `min_tags` times ("duck": the bird 4, the
others 0; a single tag is an accident of SemCor's texts). Senses that do not compete:

- instance senses: named individuals (Hippo the ancient town, Stephen Crane), which image
  results for a lower-case common noun rarely show;
- senses outside the selection in the lexicographer files of organisms and food (the wood of
  the sabicu tree, the flesh of a duck, the fibre of flax): a picture of those shows a part or
  product of the organism, which counts as the organism;
- selected senses below the entity's own: a picture of them shows a member of it.

Competing senses inside the selection make the string an *in-domain* homonym ("coney": a
rabbit, a pika, a hyrax, a grouper), the others an *out-of-domain* one. Among selected synsets
with no tags to go by, the one whose headword (first lemma) the string is keeps it: "seahorse"
is the fish's name and only an alias of the walrus, "cat" the true cat's and an alias of the big
cats; the others are qualified or lose the string.

A name made of listed adjectives and a head noun ("yellow flag", "black cat", "black widow") is
also read word by word: when the head's first sense, well attested in SemCor, is neither the
entity nor above it (a flag is an emblem, a cat a true cat, a widow a person), the head's senses
read before one that is compete too, whatever the whole name's own senses say. The qualifier is the
nearest hypernym a person would add: one people use (tagged in SemCor, or the last word of at
least `qualifier_min_names` selected names, so "butterfly" but not "lycaenid"), looked for up to
the natural type, then among the entity's other names ("flag iris"); the string must not
contain it, and it must name none of the competing senses nor their hypernyms, so that the
two words together read one way only ("iris plant": no other iris is a plant).

Only WordNet is consulted. Wikidata items outside the roots that share a label would be a
second source of competing senses, but the entities stage keeps only items below the roots,
so offline there is nothing to look them up in; an entity without a synset is not checked.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from kgclip.config import AmbiguityConfig
from kgclip.kg.wordnet import HYPERNYM, INSTANCE_HYPERNYM, Sense, WordNet
from kgclip.search.subject import ADJECTIVES
from kgclip.tables import Entity, NaturalType
from kgclip.text.kg_types import ancestors

NONE = "none"
OUT_OF_DOMAIN = "out_of_domain"
IN_DOMAIN = "in_domain"
BOTH = "both"
# noun.animal, noun.food, noun.plant (lexnames(5WN) numbers): parts and products of organisms.
DERIVED_LEXFILES = frozenset({5, 13, 20})


@dataclass(frozen=True)
class Verdict:
    """Whether a string means its entity, the senses it competes with, and a term that tells them apart."""

    ambiguity: str
    senses: list[str]
    qualifier: str | None = None
    headword: bool = False  # in-domain rivals only have it as an alias: the entity keeps it bare
    kin: bool = False  # selected synsets sharing their headword (two echidnas): near kin
    rivals: list[int] = field(default_factory=list, compare=False)


UNAMBIGUOUS = Verdict(NONE, [])


def offset_of(entity: Entity) -> int | None:
    return int(entity.wordnet[1:]) if entity.wordnet else None


def words(text: str) -> list[str]:
    return text.lower().split()


_SEPARATORS = re.compile(r"[\s_'’-]+")


def spelling(lemma: str) -> str:
    """What a reader hears: case, spaces, hyphens and apostrophes dropped ("sea horse" = "seahorse")."""
    return _SEPARATORS.sub("", lemma.lower())


def singulars(word: str) -> list[str]:
    """The singulars a plural-looking word may be of ("trumpets", "berries", "boxes"); none for
    short words, whose -s is rarely a plural ("ass", "iris" stay)."""
    if len(word) < 5 or not word.endswith("s") or word.endswith("ss"):
        return []
    out = [word[:-1]]
    if word.endswith("ies"):
        out.append(word[:-3] + "y")
    elif word.endswith("es"):
        out.append(word[:-2])
    return out


class Homonyms:
    """WordNet's readings of query strings, judged against the harvest's selected synsets."""

    def __init__(
        self, wn: WordNet, entities: list[Entity], types: dict[str, NaturalType], cfg: AmbiguityConfig
    ) -> None:
        self.wn = wn
        self.cfg = cfg
        self.types = types
        self.by_id = {e.id: e for e in entities}
        self.domain = {o: e for e in entities if (o := offset_of(e)) is not None}
        self._compounds: dict[str, list[str]] | None = None
        self._spelling_index: dict[str, list[str]] | None = None
        self._above_cache: dict[int, set[int]] = {}
        self.heads: dict[str, int] = {}
        for e in entities:
            for name in {n.lower() for n in (e.name, *e.aliases)}:
                parts = name.split()
                for i in range(1, len(parts)):
                    tail = " ".join(parts[i:])
                    self.heads[tail] = self.heads.get(tail, 0) + 1

    def readings(self, text: str) -> list[Sense]:
        """The noun senses of every lemma `text` may be read as, in sense order (the string's own
        first), each with the tags of all those lemmas in it."""
        last = text.lower().split()[-1] if text.strip() else ""
        forms = [text, *(text[: len(text) - len(last)] + s for s in singulars(last))]
        lemmas: list[str] = []
        for form in forms:
            for lemma in self._spellings().get(spelling(form), []):
                if lemma not in lemmas:
                    lemmas.append(lemma)
        tags: dict[int, int] = {}
        order: list[int] = []
        for lemma in lemmas:
            for sense in self.wn.noun_senses(lemma):
                if sense.offset not in tags:
                    order.append(sense.offset)
                tags[sense.offset] = tags.get(sense.offset, 0) + sense.tag_count
        return [Sense(offset, i, tags[offset]) for i, offset in enumerate(order, start=1)]

    def _spellings(self) -> dict[str, list[str]]:
        """index.noun's lemmas by their spelling() key, lemmas whose key is their own first."""
        if self._spelling_index is None:
            index: dict[str, list[str]] = defaultdict(list)
            for lemma in self.wn.lemmas():
                index[spelling(lemma)].append(lemma)
            self._spelling_index = dict(index)
        return self._spelling_index

    def competing(self, own: int, text: str) -> list[Sense]:
        """The string's senses that a reader could mean instead of synset `own`."""
        return [
            s
            for s in self.readings(text)
            if s.offset != own
            and self._competes(s.offset)
            and not (s.offset in self.domain and own in self._above(s.offset))
        ]

    def _competes(self, offset: int) -> bool:
        """Whether a sense could be meant instead of a selected one: not a named individual, and
        not (outside the selection) a part or product of an organism."""
        synset = self.wn.by_offset(offset)
        derived = offset not in self.domain and synset.lexfile in DERIVED_LEXFILES
        return not (derived or synset.is_instance)

    def verdict(self, entity: Entity, text: str) -> Verdict:
        """How `text` reads as a name of `entity`; an entity without a synset is not checked.

        Out of the domain, the string is ambiguous unless the selection's senses together carry
        `dominant_share` of its tags or, with too few tags, of the compound names it is a word of
        ("chess": chess piece, chess move, chess club... none of them living). Inside, it is
        ambiguous whenever another selected synset shares it, unless the entity's own sense
        carries `dominant_share` of the string's tags ("hen": the bird 22, the others 1) or, with
        too few tags, the string is the entity's headword and only an alias of the others.
        Read word by word, it may be ambiguous whatever its own senses say (`_composed`).
        """
        own = offset_of(entity)
        if own is None:
            return UNAMBIGUOUS
        rivals = self.competing(own, text)
        mine = next((s.tag_count for s in self.readings(text) if s.offset == own), 0)
        inside = [s for s in rivals if s.offset in self.domain]
        outside = [s for s in rivals if s.offset not in self.domain]
        if self._dominates(mine, sum(s.tag_count for s in rivals)):
            return UNAMBIGUOUS
        headword = kin = False
        if inside and not self._tagged(mine + sum(s.tag_count for s in rivals)) and self._headword(own, text):
            kin = any(self._headword(s.offset, text) for s in inside)
            headword = not kin
        if outside and self._domain_dominates(own, text, mine + sum(s.tag_count for s in inside), outside):
            outside = []
        known = {s.offset for s in (*inside, *outside)}
        for sense in self._composed(own, text):
            if sense.offset not in known:
                (inside if sense.offset in self.domain else outside).append(sense)
        if headword and not outside:
            return Verdict(IN_DOMAIN, self._described(inside), None, headword=True)
        if not (inside or outside):
            return UNAMBIGUOUS
        kind = BOTH if inside and outside else IN_DOMAIN if inside else OUT_OF_DOMAIN
        shown = inside + outside
        offsets = [s.offset for s in shown]
        qualifier = self.qualifier(entity, text, offsets)
        return Verdict(kind, self._described(shown), qualifier, kin=kin and not outside, rivals=offsets)

    def _described(self, senses: list[Sense]) -> list[str]:
        return [self.describe(s.offset) for s in senses]

    def _headword(self, offset: int, text: str) -> bool:
        return spelling(self.wn.by_offset(offset).lemmas[0]) == spelling(text)

    def _composed(self, own: int, text: str) -> list[Sense]:
        """Senses of the head a reader reaches before one the entity is, for a name of listed
        adjectives and a head noun whose first sense is well attested ("yellow flag": the emblem
        and the masthead before the iris; "black cat": every cat, since a fisher is none)."""
        parts = words(text)
        if len(parts) < 2 or not all(w in ADJECTIVES for w in parts[:-1]):
            return []
        senses = [s for s in self.readings(parts[-1]) if self._competes(s.offset) or s.offset == own]
        if not senses or not self._tagged(senses[0].tag_count):
            return []
        above = self._above(own)
        out = []
        for sense in senses:
            if sense.offset in above:
                break
            out.append(sense)
        return out

    def _above(self, offset: int) -> set[int]:
        """A synset and every synset above it."""
        cached = self._above_cache.get(offset)
        if cached is None:
            cached = {offset}
            for parent in self.wn.by_offset(offset).related(HYPERNYM, INSTANCE_HYPERNYM):
                cached |= self._above(parent)
            self._above_cache[offset] = cached
        return cached

    def _tagged(self, total: int) -> bool:
        """Whether SemCor tagged a string often enough for its tags to say what it means."""
        return total >= self.cfg.min_tags

    def _dominates(self, count: int, others: int) -> bool:
        total = count + others
        return self._tagged(total) and count >= self.cfg.dominant_share * total

    def _domain_dominates(self, own: int, text: str, inside: int, outside: list[Sense]) -> bool:
        others = sum(s.tag_count for s in outside)
        if self._tagged(inside + others):
            return self._dominates(inside, others)
        found, against = self._compound_evidence(text.lower().replace(" ", "_"), own)
        return found + against > 0 and found >= self.cfg.dominant_share * (found + against)

    def _compound_evidence(self, lemma: str, own: int | None = None) -> tuple[int, int]:
        """Senses of the compound names that have `lemma` as a word: how many are in the selection,
        and how many compete outside it. WordNet's record of what a word is about when SemCor
        never tagged it. The entity's own names are no evidence ("jack-o-lantern fungus" says
        nothing of what "jack-o-lantern" means)."""
        if self._compounds is None:
            self._compounds = defaultdict(list)
            for name in self.wn.lemmas():
                parts = name.split("_")
                for part in set(parts) if len(parts) > 1 else ():
                    self._compounds[part].append(name)
        inside = outside = 0
        for name in self._compounds.get(lemma, []):
            senses = self.wn.noun_senses(name)
            if own is not None and any(s.offset == own for s in senses):
                continue
            for sense in senses:
                if sense.offset in self.domain:
                    inside += 1
                elif self._competes(sense.offset):
                    outside += 1
        return inside, outside

    def describe(self, offset: int) -> str:
        """A sense as the queries table lists it: "wnid lemma: gloss"."""
        synset = self.wn.by_offset(offset)
        return f"{synset.wnid} {synset.lemmas[0].replace('_', ' ')}: {synset.definition}"

    def qualifier(self, entity: Entity, text: str, rivals: list[int]) -> str | None:
        """The first candidate that the string lacks and that names none of the rival senses nor
        any of their hypernyms: "iris plant" is clear although "plant" alone is a factory first,
        because no other iris is a plant; "giant organism" is not, since a giant person is one."""
        blocked = set(words(text))
        for offset in rivals:
            blocked |= self._kind_words(offset)
        for candidate in self._candidates(entity):
            if not set(words(candidate)) & blocked and candidate.lower().replace(" ", "_") not in blocked:
                return candidate
        return None

    def _kind_words(self, offset: int) -> set[str]:
        """Every lemma of a synset and of all its hypernyms, lower-cased (underscores kept)."""
        out: set[str] = set()
        seen: set[int] = set()
        stack = [offset]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            synset = self.wn.by_offset(current)
            for lemma in synset.lemmas:
                out.add(lemma.lower())
            stack.extend(synset.related(HYPERNYM, INSTANCE_HYPERNYM))
        return out

    def _candidates(self, entity: Entity) -> list[str]:
        """Ancestors a person would name, nearest first, up to the natural type; then the entity's
        other names (its own synset: "iris" for the flag)."""
        ntype = self.types.get(entity.id)
        out: list[str] = []
        for ancestor in ancestors(entity, self.by_id):
            offset = offset_of(ancestor)
            at_type = ntype is not None and ancestor.id == ntype.type_id
            if offset is not None and (at_type or self._in_use(ancestor.name, offset)):
                out.append(ancestor.name)
            if at_type:
                break
        return [*out, entity.name, *entity.aliases]

    def _in_use(self, name: str, offset: int) -> bool:
        tagged = self.wn.tag_count(name.lower().replace(" ", "_"), offset) > 0
        return tagged or self.heads.get(name.lower(), 0) >= self.cfg.qualifier_min_names
