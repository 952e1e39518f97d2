"""A 63-bit perceptual hash that survives resizing, re-encoding, colour shifts, borders and crops.

The hash is the classic DCT pHash (grey 32×32, the 8×8 lowest frequencies without the DC term,
each bit "above the median"), with one addition: uniform borders are trimmed first, repeatedly,
so a frame added around a picture, or the margin of a clip-art image on white, does not move
the content. Crops are handled on the indexing side: `variants` adds the hashes of ten crops
(4% and 9% off), so a copy cropped by up to ~10% lands near one of them
(benchmarks/decontam_recall.py).

Hand-written rather than `imagehash`: that package pulls SciPy and PyWavelets for a 32×32 DCT,
which is one matrix product here, and has no border trimming.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

VERSION = 2  # raise whenever a change gives other hashes: stored hashes and indexes then re-make
SIDE = 32  # the DCT input
LOW = 8  # the kept low-frequency block
BITS = LOW * LOW - 1  # 63: the DC term says only "how bright", so it is left out
_TRIM_TOLERANCE = 40  # grey levels from the border colour that count as content
_TRIM_FRACTION = 0.02  # share of a row or column that must be content for it to stay
_UNIFORM_EDGE = 0.95  # share of the outermost pixels that must match for a border to count
# Trimming goes on while the edge is uniform, so a framed copy and its unframed original end at the
# same place (a fixed two passes stopped the copy at its margin and the original inside its object).
_TRIM_PASSES = 6
_SEAM = 0.008  # share of the side skipped past a cut edge (2 pixels at the working side)
_CROPS = (0.04, 0.09)  # shares cut off in the crop variants: together they cover crops up to ~10%
_WORKING_SIDE = 256  # trimming works at 1-2x this longer side: full size would cost more than decoding
_DCT = np.cos(np.pi * np.outer(np.arange(SIDE), 2 * np.arange(SIDE) + 1) / (2 * SIDE))
_WEIGHTS = 1 << np.arange(BITS - 1, -1, -1, dtype=np.uint64)
_LEVELS = np.arange(256, dtype=np.int64)


def phash(image: Image.Image) -> int:
    """The hash of an image in any mode (alpha should already be flattened)."""
    return _hash(trim(_grey(image)))


def variants(image: Image.Image) -> list[int]:
    """The hash plus the hashes of ten crops (4% and 9% off each side, and round the centre), for
    an index that must also catch cropped copies. The first entry is `phash(image)`."""
    grey = trim(_grey(image))
    width, height = grey.size
    boxes = []
    for share in _CROPS:
        dx, dy = int(width * share), int(height * share)
        boxes += [
            (dx, 0, width, height),
            (0, 0, width - dx, height),
            (0, dy, width, height),
            (0, 0, width, height - dy),
            (dx // 2, dy // 2, width - dx // 2, height - dy // 2),
        ]
    return [_hash(grey), *(_hash(grey.crop(box)) for box in boxes)]


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def colour(image: Image.Image) -> int:
    """The mean colour of what is left after trimming, as 0xRRGGBB. The hash is blind to hue (a red
    and a green flag of one drawing hash alike), so near-duplicate merging also compares this; the
    trimmed area, not the whole, so that a frame or a white margin does not water it down."""
    return keys(image)[1]


def keys(image: Image.Image) -> tuple[int, int]:
    """(`phash`, `colour`) with one grey copy and one trim: what the fetch workers store."""
    small = _small(image)
    grey = small.convert("L")
    box = _trim_box(np.asarray(grey, dtype=np.int16))
    # the mean of each channel from its histogram: exact integer sums, as ImageStat gives them, without
    # ImageStat's Python loop over the 768 bins (fetch calls this once per image)
    counts = np.asarray(small.crop(box).histogram(), dtype=np.int64).reshape(3, 256)
    means = (counts @ _LEVELS) / counts[0].sum()
    r, g, b = (min(255, round(float(v))) for v in means)
    return _hash(grey.crop(box)), (r << 16) | (g << 8) | b


def colour_distance(a: int, b: int) -> int:
    """The largest difference of one channel between two `colour` values (0..255)."""
    return max(abs(((a >> s) & 0xFF) - ((b >> s) & 0xFF)) for s in (16, 8, 0))


def trim(grey: Image.Image) -> Image.Image:
    """Cut uniform borders while there are any: a frame, then the picture's own plain margin.

    A border is uniform when ≥95% of the outermost pixels are within 40 grey levels of their
    median (JPEG noise near an edge stays within that); a photo's edge is not, and is left alone.
    Then a row or column stays if ≥2% of it differs from that colour by more.
    """
    return grey.crop(_trim_box(np.asarray(grey, dtype=np.int16)))


def _trim_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """What `trim` keeps, as a (left, top, right, bottom) box with exclusive ends."""
    top, left = 0, 0
    for _ in range(_TRIM_PASSES):
        height, width = pixels.shape
        if min(height, width) < 16:
            break
        edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        colour = np.median(edge)
        if np.mean(np.abs(edge - colour) <= _TRIM_TOLERANCE) < _UNIFORM_EDGE:
            break
        content = np.abs(pixels - np.int16(colour)) > _TRIM_TOLERANCE
        rows = np.flatnonzero(np.count_nonzero(content, axis=1) > _TRIM_FRACTION * width)
        cols = np.flatnonzero(np.count_nonzero(content, axis=0) > _TRIM_FRACTION * height)
        if len(rows) < 8 or len(cols) < 8:  # nothing, or a sliver, stands out: keep the whole
            break
        first_row, last_row = _inside(rows, height), _inside(rows[::-1], height, -1)
        first_col, last_col = _inside(cols, width), _inside(cols[::-1], width, -1)
        if last_row - first_row < 8 or last_col - first_col < 8:
            break
        if (first_row, first_col, last_row, last_col) == (0, 0, height - 1, width - 1):
            break
        pixels = pixels[first_row : last_row + 1, first_col : last_col + 1]
        top, left = top + first_row, left + first_col
    height, width = pixels.shape
    return left, top, left + width, top + height


def _inside(kept: np.ndarray, size: int, step: int = 1) -> int:
    """The first kept row or column from one side, moved past the seam if that side was cut: where
    a frame meets the picture, resizing and JPEG blend a line or two that belongs to neither."""
    first = int(kept[0])
    edge = 0 if step == 1 else size - 1
    seam = max(1, round(_SEAM * size))
    return first if first == edge else first + step * seam


def _grey(image: Image.Image) -> Image.Image:
    return _small(image).convert("L")


def _small(image: Image.Image) -> Image.Image:
    """An RGB copy reduced by an integer factor to a longer side between the working side and twice
    that: box reduction is cheap where an exact resize would cost more than the rest of the hash.
    Trimming counts in shares of the size (its seam too), so the scale left over does not matter."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    factor = max(rgb.size) // _WORKING_SIDE
    return rgb.reduce(factor) if factor > 1 else rgb


def _hash(grey: Image.Image) -> int:
    small = np.asarray(grey.resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.float64)
    low = (_DCT @ small @ _DCT.T)[:LOW, :LOW].ravel()[1:]
    bits = (low > np.median(low)).astype(np.uint64)
    return int((bits * _WEIGHTS).sum())
