"""Is the thing a caption is about a kind of the query's entity? WordNet decides.

A folder category names a group ("birds/", "rodents/"): a picture of a blackbird in `birds/` is a
bird, but a rabbit in the stamps' `rodents/` folder is not a rodent, nor a sheep in `bovines/` a
bovine (WordNet: genus Bos). So a category may link a picture to the query's entity only when the
caption's subject names, in WordNet, that entity or something below it (hypernyms and instance
hypernyms, any sense of the subject).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from kgclip.kg.wordnet import (
    HYPERNYM,
    INSTANCE_HYPERNYM,
    PART_HOLONYM,
    SUBSTANCE_HOLONYM,
    UnknownSynset,
    WordNet,
    open_wordnet,
)
from kgclip.search.subject import key_tokens

WORDNET_PREFIX = "wn:"  # entity ids of WordNet synsets: "wn:n02084071"
ORGANISM_LEXFILES = frozenset({5, 20})  # noun.animal, noun.plant
LIVING_LEXFILES = frozenset({5, 13, 20})  # and noun.food: the parts and products of organisms
PROMINENT = 0.2  # share of a folder word's SemCor tags that makes a sense one it is read in


class KindCheck:
    """`is_kind(subjects, entity_id)`: True when one of the subject phrases names the entity or a
    kind of it. A phrase WordNet lacks ("european bear") is tried without its first words ("bear")."""

    def __init__(self, wordnet: WordNet, variants: Callable[[str], list[str]]) -> None:
        self.wordnet, self.variants = wordnet, variants

    @classmethod
    def open(cls, variants: Callable[[str], list[str]], path: Path | None = None) -> KindCheck:
        return cls(open_wordnet(path), variants)

    def is_kind(self, subjects: list[str], entity_id: str | None) -> bool:
        if not entity_id or not entity_id.startswith(WORDNET_PREFIX):
            return False  # only WordNet entities have a hierarchy to check against
        offset = int(entity_id.removeprefix(WORDNET_PREFIX).lstrip("n"))
        return any(offset in self._above(phrase) for phrase in subjects)

    def compound_denies(self, phrase: str, entity_id: str | None) -> bool:
        """Whether a caption's subject is a compound WordNet knows that is no kind, part or product
        of the entity: a "hot dog" is no dog, "two wild boars" no uncastrated male hog, a "green
        pepper" (a capsicum's fruit) no black pepper vine. A compound WordNet lacks says nothing."""
        words = key_tokens(phrase)  # "Hot_Dog" too
        own = self._synset(entity_id)
        if len(words) < 2 or own is None:
            return False
        for last in (words[-1], *self.variants(words[-1])):
            offsets = self.wordnet.senses("_".join([*words[:-1], last]))
            if offsets:
                return not any(own in self._closure(o, wholes=True) for o in offsets)
        return False

    def folder_fits(self, category: str, entity_id: str | None) -> bool:
        """Whether a picture's folder is about the entity's kind of thing: one of its words names
        the entity, something above or below it, or, for an organism, any animal, plant or food
        ("animals/mammals", "food/fruits"). A clock in `office/` is no storksbill, a hot dog in
        `food/` no dog, a chess queen in `games/` no queen bee. No folder, or no synset, fits."""
        own = self._synset(entity_id)
        return not category.strip() or own is None or self._fits(category, own)

    def _synset(self, entity_id: str | None) -> int | None:
        """The entity's synset offset; None for an entity WordNet does not hold (nothing to judge)."""
        if not entity_id or not entity_id.startswith(WORDNET_PREFIX):
            return None
        offset = int(entity_id.removeprefix(WORDNET_PREFIX).lstrip("n"))
        try:
            self.wordnet.by_offset(offset)
        except UnknownSynset:
            return None
        return offset

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one checker per backend, kept for its life)
    def _fits(self, category: str, own: int) -> bool:
        above = self._closure(own)
        organism = self.wordnet.by_offset(own).lexfile in ORGANISM_LEXFILES
        for word in key_tokens(category):
            for form in (word, *self.variants(word)):
                for sense in self._prominent(form):
                    if sense in above or own in self._closure(sense):
                        return True
                    if organism and self.wordnet.by_offset(sense).lexfile in LIVING_LEXFILES:
                        return True
        return False

    def _prominent(self, lemma: str) -> list[int]:
        """The senses a folder name is read in: those with at least PROMINENT of the lemma's SemCor
        tags ("games" are contests, not game animals; "flags" emblems, not irises), or all of them
        when it has fewer than two tags."""
        senses = self.wordnet.noun_senses(lemma)
        total = sum(s.tag_count for s in senses)
        if total < 2:
            return [s.offset for s in senses]
        return [s.offset for s in senses if s.tag_count >= PROMINENT * total]

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one checker per backend, kept for its life)
    def _above(self, phrase: str) -> frozenset[int]:
        """Every synset a sense of `phrase` is, or is below (itself included). A name WordNet lacks
        whose every word is capitalised ("Edward Bear", a teddy) is somebody's name: its last word
        says nothing of what it is."""
        written = phrase.split()
        words = phrase.lower().split()
        named = len(written) > 1 and all(w[:1].isupper() for w in written)
        for start in range(1 if named else len(words)):
            for last in (words[-1], *self.variants(words[-1])):  # "cherries": "cherry"
                offsets = self.wordnet.senses("_".join([*words[start:-1], last]))
                if offsets:
                    return frozenset(o for s in offsets for o in self._closure(s))
        return frozenset()

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one checker per backend, kept for its life)
    def _closure(self, offset: int, wholes: bool = False) -> frozenset[int]:
        """A synset and everything it is (hypernyms); with `wholes`, also what it is a part or
        product of, through the part and substance holonyms of food and organism parts on the way
        (pepper fruit → capsicum)."""
        seen, stack = set(), [offset]
        while stack:
            here = stack.pop()
            if here not in seen:
                seen.add(here)
                synset = self.wordnet.by_offset(here)
                stack.extend(synset.related(HYPERNYM, INSTANCE_HYPERNYM))
                if wholes and synset.lexfile in LIVING_LEXFILES:
                    stack.extend(synset.related(PART_HOLONYM, SUBSTANCE_HOLONYM))
        return frozenset(seen)
