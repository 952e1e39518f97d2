"""A 64-bit perceptual hash that survives resizing, re-encoding, colour shifts, borders and crops.

The hash is the classic DCT pHash (grey 32×32, the 8×8 lowest frequencies without the DC term,
each bit "above the median"), with one addition: uniform borders are trimmed first, repeatedly,
so a frame added around a picture, or the margin of a clip-art image on white, does not move
the content. Crops are handled on the indexing side: `variants` adds the hashes of a few 6%
crops, so a copy cropped by up to ~10% lands near one of them (benchmarks/decontam_recall.py).

Hand-written rather than `imagehash`: that package pulls SciPy and PyWavelets for a 32×32 DCT,
which is one matrix product here, and has no border trimming.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 32  # the DCT input
LOW = 8  # the kept low-frequency block
BITS = LOW * LOW - 1  # 63: the DC term says only "how bright", so it is left out
_TRIM_TOLERANCE = 40  # grey levels from the border colour that count as content
_TRIM_FRACTION = 0.02  # share of a row or column that must be content for it to stay
_UNIFORM_EDGE = 0.95  # share of the outermost pixels that must match for a border to count
_CROP = 0.06
_WORKING_SIDE = 256  # hashing starts from at most this size: trimming at full size costs more than decoding
_DCT = np.cos(np.pi * np.outer(np.arange(SIDE), 2 * np.arange(SIDE) + 1) / (2 * SIDE))
_WEIGHTS = 1 << np.arange(BITS - 1, -1, -1, dtype=np.uint64)


def phash(image: Image.Image) -> int:
    """The hash of an image in any mode (alpha should already be flattened)."""
    return _hash(trim(_grey(image)))


def variants(image: Image.Image) -> list[int]:
    """The hash plus the hashes of five 6% crops (each side, and the centre), for an index that
    must also catch cropped copies. The first entry is `phash(image)`."""
    grey = trim(_grey(image))
    width, height = grey.size
    dx, dy = int(width * _CROP), int(height * _CROP)
    boxes = [
        (dx, 0, width, height),
        (0, 0, width - dx, height),
        (0, dy, width, height),
        (0, 0, width, height - dy),
        (dx // 2, dy // 2, width - dx // 2, height - dy // 2),
    ]
    return [_hash(grey), *(_hash(grey.crop(box)) for box in boxes if dx and dy)]


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def trim(grey: Image.Image) -> Image.Image:
    """Cut uniform borders, up to twice: a frame, then the picture's own plain margin.

    A border is uniform when ≥95% of the outermost pixels are within 40 grey levels of their
    median (JPEG noise near an edge stays within that); a photo's edge is not, and is left alone.
    Then a row or column stays if ≥2% of it differs from that colour by more.
    """
    pixels = np.asarray(grey, dtype=np.int16)
    for _ in range(2):
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
        pixels = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Image.fromarray(pixels.astype(np.uint8))


def _grey(image: Image.Image) -> Image.Image:
    """A small grey copy: an integer box reduction to at most ~2× the working side, then grey."""
    grey = image.convert("L")
    factor = max(image.size) // _WORKING_SIDE
    return grey.reduce(factor) if factor > 1 else grey


def _hash(grey: Image.Image) -> int:
    small = np.asarray(grey.resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.float64)
    low = (_DCT @ small @ _DCT.T)[:LOW, :LOW].ravel()[1:]
    bits = (low > np.median(low)).astype(np.uint64)
    return int((bits * _WEIGHTS).sum())
