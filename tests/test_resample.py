"""The compiled resize against Pillow's own: the same pixels, bit for bit.

Pillow 13 picks the order of the two passes itself (vertically first when the height shrinks much
more than the width), and a pass rounds to 8 bits, so its one-call result depends on that choice.
The reference here is the order this module always uses, horizontal first, made from two Pillow
calls that each need one pass only: Pillow's arithmetic, whatever order its version prefers.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kgclip.fetch.images import _resize
from kgclip.fetch.resample import convolve_resize

FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
}


def noise(rng: np.random.Generator, mode: str, width: int, height: int) -> Image.Image:
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def horizontal_first(
    image: Image.Image, size: tuple[int, int], box: tuple[float, ...], kind: str
) -> Image.Image:
    """Pillow's two passes as two calls: the first changes only the width, the second only the height."""
    width, height = size
    rows = image.resize((width, image.height), FILTERS[kind], box=(box[0], 0, box[2], image.height))
    return rows.resize((width, height), FILTERS[kind], box=(0, box[1], width, box[3]))


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kind", list(FILTERS))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_random_sizes_and_boxes_give_pillows_pixels(kind: str, mode: str) -> None:
    rng = np.random.default_rng([len(kind), len(mode)])
    for case in range(60):
        width, height = (int(v) for v in rng.integers(1, 260, 2))
        size = tuple(int(v) for v in rng.integers(1, 260, 2))
        box: tuple[float, ...] = (0, 0, width, height)
        if case % 2:  # a fractional box inside the image, as JPEG draft decoding returns
            left, top = float(rng.uniform(0, width / 3)), float(rng.uniform(0, height / 3))
            box = (left, top, float(rng.uniform(left + 0.5, width)), float(rng.uniform(top + 0.5, height)))
        image = noise(rng, mode, width, height)
        assert same(convolve_resize(image, size, box, kind), horizontal_first(image, size, box, kind)), (
            mode,
            kind,
            image.size,
            size,
            box,
        )


@pytest.mark.parametrize(
    ("size", "target"), [((900, 120), (101, 120)), ((120, 900), (120, 97)), ((1, 1), (5, 3))]
)
def test_one_pass_resizes_equal_pillows_one_call_with_its_reduction(
    size: tuple[int, int], target: tuple[int, int]
) -> None:
    """Where only one side changes, the order cannot matter, so fetch's resize (Pillow's integer
    reduction by 2-8x first, then the filter) must equal Pillow's own call exactly."""
    rng = np.random.default_rng(7)
    image = noise(rng, "RGB", *size)
    for kind in FILTERS:
        expected = image.resize(target, FILTERS[kind], reducing_gap=3.0)
        assert same(_resize(image, target, None, kind), expected), kind


def test_a_portrait_photo_shrunk_evenly_keeps_the_horizontal_first_order() -> None:
    """The case where Pillow 13 filters vertically first: this module's pixels do not follow it."""
    rng = np.random.default_rng(3)
    image = noise(rng, "RGB", 364, 800)
    box = (0.0, 0.0, 363.5, 800.0)
    ours = convolve_resize(image, (256, 563), box, "bicubic")
    assert same(ours, horizontal_first(image, (256, 563), box, "bicubic"))


def test_unchanged_size_returns_the_image_and_other_modes_are_refused() -> None:
    image = noise(np.random.default_rng(1), "RGB", 40, 30)
    assert _resize(image, (40, 30), None, "bicubic") is image
    with pytest.raises(ValueError, match="RGB or L images, not RGBA"):
        convolve_resize(image.convert("RGBA"), (20, 15), (0, 0, 40, 30), "bicubic")
