"""What every evaluation set reader returns: classes with what the graph knows of them, and items.

A reader only lists; image bytes are read when an item's `read()` is called, in the order the
items come, so a 100,000-image set is never held in memory and embedding can decode in workers.
The fingerprint names the set's content (file names, sizes, times), so cached embeddings are reused
only for the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from kgclip.workdir import digest_of

CLASSIFICATION = "zeroshot_classification"
RETRIEVAL = "zeroshot_retrieval"
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


class EvalSetError(ValueError):
    """An evaluation set that cannot be read as asked: the message names the file and the problem."""


@dataclass(frozen=True)
class ClassInfo:
    """One class: its display name (the classnames.txt line) plus every name the graph gives it."""

    name: str
    wnid: str | None = None  # WordNet 3.0 noun synset, "n02084071"
    scientific: str | None = None
    common: str | None = None
    taxonomy: dict[str, str] = field(default_factory=dict)  # rank (RANKS) -> value
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    """One image: a stable key, its label (classification) or texts (retrieval), and its bytes."""

    key: str
    read: Callable[[], bytes]
    label: int | None = None
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalSet:
    """A named set. `items` yields in a fixed order; `templates` are the set's own prompts, if any.

    `skipped` names what a reader left out while listing, so results can count it beside the images
    that fail to decode later.
    """

    name: str
    task: str
    classes: Sequence[ClassInfo]
    items: Callable[[], Iterator[Item]]
    fingerprint: str
    source: str
    templates: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # "file: reason" for each image the reader could not list (FIFO, missing)

    def __post_init__(self) -> None:
        if self.task not in (CLASSIFICATION, RETRIEVAL):
            raise EvalSetError(f"{self.name}: unknown task {self.task!r}")
        if self.task == CLASSIFICATION and not self.classes:
            raise EvalSetError(f"{self.name}: no classes")


def fingerprint_of(*parts: object) -> str:
    return digest_of(*(str(p) for p in parts))
