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

from kgclip.kg.wordnet import HYPERNYM, INSTANCE_HYPERNYM, WordNet, open_wordnet

WORDNET_PREFIX = "wn:"  # entity ids of WordNet synsets: "wn:n02084071"


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

    def _closure(self, offset: int) -> set[int]:
        seen, stack = set(), [offset]
        while stack:
            here = stack.pop()
            if here not in seen:
                seen.add(here)
                stack.extend(self.wordnet.by_offset(here).related(HYPERNYM, INSTANCE_HYPERNYM))
        return seen
