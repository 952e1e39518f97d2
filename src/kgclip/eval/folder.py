"""ImageFolder-style trees, and the listing every file-based set reader shares.

An ImageFolder tree is torchvision's layout: one folder per class, images anywhere below it. Class
i is the i-th class folder in sorted order, and line i of a class-name file (`PATH/classnames.txt`
unless another file is given) names it, so a tree of wnid or numbered folders gets readable names.

Listing stats every image once (the fingerprint is made of names, sizes and times) but reads no
bytes: an item's `read()` opens its file only when it is embedded. Something that is not a regular
file (a FIFO would block a reader forever) or a listed file that is missing is left out with its
reason in `EvalSet.skipped`; a file that is there but does not decode is still listed, and the
embedding counts it.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kgclip.eval.sets import CLASSIFICATION, ClassInfo, EvalSet, EvalSetError, Item, fingerprint_of
from kgclip.localfiles import not_regular, read_regular

# torchvision's IMG_EXTENSIONS: what ImageFolder (and CLIP_benchmark through it) counts as an image.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CLASSNAMES = "classnames.txt"


@dataclass
class Listing:
    """Images found for a set, in item order: (file, label) pairs, their stats and what was left out."""

    root: Path
    files: list[tuple[Path, int]] = field(default_factory=list)
    stats: list[tuple[str, int, int, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, path: Path, label: int) -> None:
        """List `path` if it is a regular file, else record why not (one stat in the common case)."""
        rel = self.key(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.skipped.append(f"{rel}: missing")
            return
        except OSError as exc:
            self.skipped.append(f"{rel}: unreadable: {exc.strerror}")
            return
        if not stat.S_ISREG(st.st_mode):
            self.skipped.append(f"{rel}: {not_regular(path)}")
            return
        self.files.append((path, label))
        self.stats.append((rel, st.st_size, st.st_mtime_ns, label))

    def key(self, path: Path) -> str:
        """The item key: the path below the set's root, with forward slashes."""
        return path.relative_to(self.root).as_posix()


def below(root: Path, name: str, where: str) -> Path:
    """`root / name` for a relative path from an annotation file; one that escapes root is an error."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise EvalSetError(f"{where}: {name!r} is not a path inside {root}")
    return root.joinpath(*rel.parts)


def walk_images(folder: Path) -> Iterator[Path]:
    """Files with an image extension below `folder`, in torchvision ImageFolder's order (sorted walk)."""
    for dirpath, _, names in sorted(os.walk(folder, followlinks=True)):
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                yield Path(dirpath) / name


def image_set(
    name: str,
    kind: str,
    classes: list[ClassInfo],
    listing: Listing,
    source: str,
    templates: tuple[str, ...] = (),
) -> EvalSet:
    """The EvalSet of a listing; a listing without a single image is an error naming the root."""
    if not listing.files:
        why = f" ({len(listing.skipped)} left out, first: {listing.skipped[0]})" if listing.skipped else ""
        raise EvalSetError(f"{listing.root}: no images for {name}{why}")
    files = list(listing.files)
    root = listing.root

    def items() -> Iterator[Item]:
        for path, label in files:
            yield Item(path.relative_to(root).as_posix(), functools.partial(read_regular, path), label=label)

    return EvalSet(
        name=name,
        task=CLASSIFICATION,
        classes=classes,
        items=items,
        fingerprint=fingerprint_of(kind, listing.stats, [c.name for c in classes]),
        source=source,
        templates=templates,
        skipped=tuple(listing.skipped),
    )


def read_lines(path: Path, what: str) -> list[str]:
    """The non-blank lines of a small text file; a missing or unreadable one is an EvalSetError."""
    try:
        data = read_regular(path)
    except FileNotFoundError:
        raise EvalSetError(f"{path}: missing ({what})") from None
    except OSError as exc:
        raise EvalSetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvalSetError(f"{path}: not UTF-8 text ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def class_folders(root: Path) -> list[str]:
    """Sub-folder names of `root`, sorted as torchvision sorts them (plain string order)."""
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def open_folder(root: Path, names: Path | None = None, name: str | None = None) -> EvalSet:
    """An ImageFolder tree with a class-name file; a count mismatch or no images is an EvalSetError."""
    root = Path(root)
    if not root.is_dir():
        raise EvalSetError(f"{root}: no such folder (an ImageFolder tree, one folder per class, is expected)")
    folders = class_folders(root)
    if not folders:
        raise EvalSetError(f"{root}: no class folders (an ImageFolder tree has one folder per class)")
    names_file = Path(names) if names is not None else root / CLASSNAMES
    labels = read_lines(
        names_file, f"one class name per line, line i naming {root}'s i-th folder in sorted order"
    )
    if len(labels) != len(folders):
        raise EvalSetError(
            f"{names_file}: {len(labels)} class names but {root} has {len(folders)} class folders "
            f"({folders[0]} … {folders[-1]}); line i must name the i-th folder in sorted order"
        )
    listing = Listing(root)
    for label, folder in enumerate(folders):
        for path in walk_images(root / folder):
            listing.add(path, label)
    return image_set(name or root.name, "folder", [ClassInfo(n) for n in labels], listing, f"folder:{root}")
