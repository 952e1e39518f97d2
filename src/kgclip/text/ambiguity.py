"""Homonyms of query strings, found in WordNet and told apart with the knowledge graph.

A search engine, or a caption, reads a bare string in its most common sense: "chess" is the
board game before it is Bromus secalinus, "hobby" a pastime before it is a falcon. The method
only resolved names shared *inside* the selection, by taking the first synset; this module
looks at every noun sense of the string (index.noun gives them in order, index.sense their
SemCor tag counts) and says whether the entity is what the bare string means.

A string is ambiguous for an entity unless the entity's sense is the only one that competes,
or carries at least `dominant_share` of the string's tagged uses ("duck": the bird 4, the
others 0). Senses that do not compete:

- instance senses: named individuals (Hippo the ancient town, Stephen Crane), which image
  results for a lower-case common noun rarely show;
- senses outside the selection in the lexicographer files of organisms and food (the wood of
  the sabicu tree, the flesh of a duck, the fibre of flax): a picture of those shows a part or
  product of the organism, which counts as the organism.

Competing senses inside the selection make the string an *in-domain* homonym ("coney": a
rabbit, a pika, a hyrax, a grouper), the others an *out-of-domain* one. The qualifier is the
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

from collections import defaultdict
from dataclasses import dataclass

from kgclip.config import AmbiguityConfig
from kgclip.kg.wordnet import HYPERNYM, INSTANCE_HYPERNYM, Sense, WordNet
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


UNAMBIGUOUS = Verdict(NONE, [])


def offset_of(entity: Entity) -> int | None:
    return int(entity.wordnet[1:]) if entity.wordnet else None


def words(text: str) -> list[str]:
    return text.lower().split()


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
        self.heads: dict[str, int] = {}
        for e in entities:
            for name in {n.lower() for n in (e.name, *e.aliases)}:
                parts = name.split()
                for i in range(1, len(parts)):
                    tail = " ".join(parts[i:])
                    self.heads[tail] = self.heads.get(tail, 0) + 1

    def competing(self, own: int, text: str) -> list[Sense]:
        """The string's senses that a reader could mean instead of synset `own`."""
        return [s for s in self.wn.noun_senses(text) if s.offset != own and self._competes(s.offset)]

    def _competes(self, offset: int) -> bool:
        """Whether a sense could be meant instead of a selected one: not a named individual, and
        not (outside the selection) a part or product of an organism."""
        synset = self.wn.by_offset(offset)
        derived = offset not in self.domain and synset.lexfile in DERIVED_LEXFILES
        return not (derived or synset.is_instance)

    def verdict(self, entity: Entity, text: str) -> Verdict:
        """How `text` reads as a name of `entity`; an entity without a synset is not checked.

        Out of the domain, the string is ambiguous unless the selection's senses together carry
        `dominant_share` of its tags or, with no tags at all, of the compound names it is a word of
        ("chess": chess piece, chess move, chess club... none of them living). Inside, it is
        ambiguous whenever another selected synset shares it, unless the entity's own sense
        carries `dominant_share` of the string's tags ("hen": the bird 22, the others 1).
        """
        own = offset_of(entity)
        if own is None:
            return UNAMBIGUOUS
        rivals = self.competing(own, text)
        lemma = text.lower().replace(" ", "_")
        mine = self.wn.tag_count(lemma, own)
        if self._dominates(mine, sum(s.tag_count for s in rivals)):
            return UNAMBIGUOUS
        inside = [s for s in rivals if s.offset in self.domain]
        outside = [s for s in rivals if s.offset not in self.domain]
        if outside and self._domain_dominates(lemma, mine + sum(s.tag_count for s in inside), outside):
            outside = []
        if not (inside or outside):
            return UNAMBIGUOUS
        kind = BOTH if inside and outside else IN_DOMAIN if inside else OUT_OF_DOMAIN
        shown = inside + outside
        senses = [self.describe(s.offset) for s in shown]
        return Verdict(kind, senses, self.qualifier(entity, text, [s.offset for s in shown]))

    def _dominates(self, count: int, others: int) -> bool:
        total = count + others
        return total > 0 and count >= self.cfg.dominant_share * total

    def _domain_dominates(self, lemma: str, inside: int, outside: list[Sense]) -> bool:
        others = sum(s.tag_count for s in outside)
        if inside + others > 0:
            return self._dominates(inside, others)
        return self._dominates(*self._compound_evidence(lemma))

    def _compound_evidence(self, lemma: str) -> tuple[int, int]:
        """Senses of the compound names that have `lemma` as a word: how many are in the selection,
        and how many compete outside it. WordNet's record of what a word is about when SemCor
        never tagged it."""
        if self._compounds is None:
            self._compounds = defaultdict(list)
            for name in self.wn.lemmas():
                parts = name.split("_")
                for part in set(parts) if len(parts) > 1 else ():
                    self._compounds[part].append(name)
        inside = outside = 0
        for name in self._compounds.get(lemma, []):
            for sense in self.wn.noun_senses(name):
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
