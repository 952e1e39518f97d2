"""ImageNet-1k val in torchvision's layout, and its WordNet subsets (living things, other things, organisms).

Layout: `ROOT/val/<wnid>/*.JPEG` (or ROOT is the val folder itself). Class i is the i-th of the
1,000 ImageNet-1k wnids sorted as strings (`data/imagenet_synsets.txt`, a copy of timm's list); its
display name is open_clip's (`data/imagenet_classnames.txt`, copied from `IMAGENET_CLASSNAMES`).

The subsets are derived from WordNet 3.0 when a set is opened, with the closure the rest of kgclip
walks (`WordNet.hyponym_closure`, hyponyms and instance hyponyms): a class is a *living thing* when
its synset lies below living_thing.n.01, i.e. living_thing.n.01 is in its hypernym and
instance-hypernym closure (410 classes, EntityNet's `imgn_lt_val`); *other things* are the other
590; *organisms* are the living things not below person.n.01 (407). A subset is a classification
among its own classes only: its images keep their class, renumbered to the class's position in the
subset, and the model chooses among the subset's names, as EntityNet evaluates `imgn_lt_val`.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from kgclip.eval.folder import Listing, class_folders, image_set, walk_images
from kgclip.eval.sets import ClassInfo, EvalSet, EvalSetError
from kgclip.kg.wordnet import UnknownSynset, WordNet, open_wordnet

DATA = resources.files("kgclip.eval") / "data"
LIVING_THING = 4258  # living_thing.n.01, n00004258
PERSON = 7846  # person.n.01, n00007846
SUBSETS = ("all", "lt", "ot", "organisms")
SPECS = {"all": "imagenet", "lt": "imagenet-lt", "ot": "imagenet-ot", "organisms": "imagenet-organisms"}
NAMES = {subset: spec.replace("imagenet", "imagenet1k") for subset, spec in SPECS.items()}  # result names
_WNID = re.compile(r"^n\d{8}$")


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k wnids in class order (sorted)."""
    return (DATA / "imagenet_synsets.txt").read_text(encoding="utf-8").split()


def imagenet_classes() -> list[ClassInfo]:
    """The 1,000 classes: open_clip's display name and the wnid, in class order."""
    names = (DATA / "imagenet_classnames.txt").read_text(encoding="utf-8").splitlines()
    return [ClassInfo(name, wnid=wnid) for name, wnid in zip(names, imagenet_wnids(), strict=True)]


def below_root(wn: WordNet, offset: int) -> set[int]:
    """The synset and every synset below it through hyponyms and instance hyponyms."""
    root = wn.by_offset(offset)
    return {offset} | {s.offset for s in wn.hyponym_closure(root, instances=True)}


def subset_indices(subset: str, wordnet: Path | None = None) -> list[int]:
    """Class indices (0-999, ascending) of a subset, computed from the WordNet 3.0 database."""
    if subset not in SUBSETS:
        raise EvalSetError(f"unknown ImageNet subset {subset!r}; use one of {', '.join(SUBSETS)}")
    wnids = imagenet_wnids()
    if subset == "all":
        return list(range(len(wnids)))
    wn = open_wordnet(wordnet)
    _check_version(wn, wnids)
    living = below_root(wn, LIVING_THING)
    offsets = [int(w[1:]) for w in wnids]
    if subset == "lt":
        return [i for i, o in enumerate(offsets) if o in living]
    if subset == "ot":
        return [i for i, o in enumerate(offsets) if o not in living]
    persons = below_root(wn, PERSON)
    return [i for i, o in enumerate(offsets) if o in living and o not in persons]


def _check_version(wn: WordNet, wnids: list[str]) -> None:
    """Offsets are WordNet 3.0's: another version (3.1, Open English WordNet) renumbers them."""
    try:
        found = wn.by_offset(LIVING_THING).name
        for wnid in wnids:
            wn.synset(wnid)
    except UnknownSynset as exc:
        raise EvalSetError(f"{exc}; ImageNet wnids are WordNet 3.0 offsets: is {wn.folder} 3.0?") from None
    if found != "living_thing.n.01":
        raise EvalSetError(f"{wn.folder}: n00004258 is {found}, not living_thing.n.01; WordNet 3.0 is needed")


def val_folder(root: Path) -> Path:
    """ROOT/val when there is one, else ROOT (given as the val folder itself)."""
    root = Path(root)
    if (root / "val").is_dir():
        return root / "val"
    if not root.is_dir():
        raise EvalSetError(f"{root}: no such folder (ImageNet val as ROOT/val/<wnid>/*.JPEG is expected)")
    return root


def open_imagenet(root: Path, subset: str = "all", wordnet: Path | None = None) -> EvalSet:
    """ImageNet-1k val, whole or one subset; folders that are not ImageNet-1k wnids are an error."""
    indices = subset_indices(subset, wordnet)
    val = val_folder(root)
    folders = class_folders(val)
    wnids = imagenet_wnids()
    position = {wnid: i for i, wnid in enumerate(wnids)}
    unknown = [f for f in folders if f not in position]
    if unknown:
        kind = "wnid" if all(_WNID.match(f) for f in unknown) else "folder"
        raise EvalSetError(
            f"{val}: unknown class folder {unknown[0]!r} ({len(unknown)} in all): not an ImageNet-1k {kind}; "
            "the val images must be sorted into one folder per wnid (torchvision's layout)"
        )
    if not folders:
        raise EvalSetError(
            f"{val}: no wnid folders; ImageNet val must be sorted into one folder per wnid "
            "(torchvision's layout, ROOT/val/n01440764/*.JPEG)"
        )
    label_of = {original: label for label, original in enumerate(indices)}
    listing = Listing(val)
    for folder in folders:
        label = label_of.get(position[folder])
        if label is None:
            continue
        for path in walk_images(val / folder):
            listing.add(path, label)
    every = imagenet_classes()
    classes = [every[i] for i in indices]
    return image_set(NAMES[subset], f"imagenet-{subset}", classes, listing, f"{SPECS[subset]}:{root}")
