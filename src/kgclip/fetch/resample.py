"""Pillow's convolution resize (bicubic, Lanczos, bilinear), compiled and vectorised.

Resizing was the largest step of fetch's CPU per photo (2.3 of 5.3 ms, benchmarks/fetch_steps.py),
and Pillow's loops over pixels are scalar: pillow-simd proves the same filter runs several times
faster with SIMD, but it cannot be a dependency (docs/architecture.md). This module does Pillow's
arithmetic exactly (the same weights in double precision, rounded to 22-bit integers; 32-bit integer
sums; each pass rounded and clipped to 8 bits), so its pixels are Pillow's, in numba loops that LLVM
vectorises.

Two things make the loops vectorise. Pixels are packed RGBX words, so one pass filters all channels
of a row at once. And every pass runs along the first axis of its input, where the taps of an
output row are whole input rows, and writes its output transposed: the horizontal pass reads the
transposed source and writes rows; the vertical pass reads those rows and writes columns, transposed
back at the end. The horizontal pass always goes first, as in Pillow up to 12; Pillow 13 sometimes
filters vertically first (when the height shrinks more than the width), which rounds the
intermediate differently: some pixels of 105 of the fetch benchmark's 2,387 images differ, by at
most 8 levels (PSNR at least 58 dB). Here the order, and so the stored pixels, do not depend on the
Pillow version installed. The convolution releases the GIL, as Pillow's does, so a decoding thread
does not stall the downloads.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numba import njit
from PIL import Image

Filter = Literal["bicubic", "lanczos", "bilinear"]
# the filters' codes in the kernels, and each filter's support (its half-width at scale 1)
_KINDS: dict[str, int] = {"bilinear": 0, "bicubic": 1, "lanczos": 2}
SUPPORT: dict[str, float] = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}
_PRECISION = 22  # bits of the integer weights: 8 for the pixel and 2 to spare in a 32-bit sum
_HALF = 1 << (_PRECISION - 1)
_MODES = {"RGB": 3, "L": 1}  # channels per packed word


@njit(cache=True)
def _weight(kind: int, x: float) -> float:
    """The filter's value at x, written as Pillow writes it (the same double operations)."""
    if kind == 0:
        x = abs(x)
        return 1.0 - x if x < 1.0 else 0.0
    if kind == 1:  # Keys' cubic with a = -0.5
        x = abs(x)
        if x < 1.0:
            return (1.5 * x - 2.5) * x * x + 1
        if x < 2.0:
            return (((x - 5) * x + 8) * x - 4) * -0.5
        return 0.0
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


@njit(cache=True)
def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


@njit(cache=True)
def _weights(
    in_size: int, start: np.float32, end: np.float32, out_size: int, kind: int, support: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each output pixel's first input pixel, its number of taps, and their integer weights.

    `start` and `end` are float32 because Pillow takes the box as C floats, and their difference is
    a float32 too: the centres, and so the weights, depend on it.
    """
    scale = np.float64(end - start) / out_size
    stretch = max(scale, 1.0)  # widen the filter when shrinking: it then averages
    reach = support * stretch
    width = math.ceil(reach) * 2 + 1
    weights = np.zeros((out_size, width), np.int32)
    bounds = np.zeros((out_size, 2), np.int32)
    taps = np.zeros(width, np.float64)
    inverse = 1.0 / stretch
    for o in range(out_size):
        centre = np.float64(start) + (o + 0.5) * scale
        first = max(int(centre - reach + 0.5), 0)
        count = min(int(centre + reach + 0.5), in_size) - first
        total = 0.0
        for t in range(count):
            taps[t] = _weight(kind, (t + first - centre + 0.5) * inverse)
            total += taps[t]
        for t in range(count):
            value = taps[t] / total if total != 0.0 else taps[t]
            weights[o, t] = int(value * (1 << _PRECISION) + (0.5 if value >= 0 else -0.5))
        bounds[o, 0] = first
        bounds[o, 1] = count
    return weights, bounds


@njit(cache=True, inline="always")
def _clip(total: np.int32) -> np.uint32:
    level = total >> _PRECISION
    return np.uint32(0 if level < 0 else (255 if level > 255 else level))


@njit(cache=True, nogil=True)
def _convolve(source: np.ndarray, weights: np.ndarray, bounds: np.ndarray, channels: int) -> np.ndarray:
    """Filter packed pixels (n_in, m) along the first axis; the result is transposed, (m, n_out).

    One array of sums per channel, each updated in its own statement: written as a 2-D array of
    sums the loop ran 2.4x slower (LLVM could not prove the rows apart and vectorised less).
    A grey image has one channel in the low byte; its other sums stay at zero.
    """
    n_out, m = weights.shape[0], source.shape[1]
    out = np.empty((m, n_out), np.uint32)
    red = np.empty(m, np.int32)
    green = np.empty(m, np.int32)
    blue = np.empty(m, np.int32)
    for o in range(n_out):
        first, count = bounds[o, 0], bounds[o, 1]
        red[:] = _HALF
        green[:] = _HALF
        blue[:] = _HALF
        for t in range(count):
            weight = weights[o, t]
            row = source[first + t]
            if channels == 3:
                for i in range(m):
                    pixel = row[i]
                    red[i] += np.int32(pixel & 0xFF) * weight
                    green[i] += np.int32((pixel >> 8) & 0xFF) * weight
                    blue[i] += np.int32((pixel >> 16) & 0xFF) * weight
            else:
                for i in range(m):
                    red[i] += np.int32(row[i]) * weight
        for i in range(m):
            out[i, o] = _clip(red[i]) | (_clip(green[i]) << 8) | (_clip(blue[i]) << 16)
    return out


def convolve_resize(
    image: Image.Image, size: tuple[int, int], box: tuple[float, ...], kind: Filter
) -> Image.Image:
    """`image.resize(size, kind, box)` for an RGB or L image, horizontal pass first."""
    channels = _MODES.get(image.mode)
    if channels is None:
        raise ValueError(f"convolve_resize takes RGB or L images, not {image.mode}")
    width, height = image.size
    out_width, out_height = size
    left, top, right, bottom = (np.float32(side) for side in box)
    code, support = _KINDS[kind], SUPPORT[kind]
    horizontal = out_width != width or left != 0 or right != out_width
    vertical = out_height != height or top != 0 or bottom != out_height
    if channels == 3:
        pixels = np.frombuffer(image.tobytes("raw", "RGBX"), np.uint32).reshape(height, width)
    else:
        pixels = np.frombuffer(image.tobytes(), np.uint8).reshape(height, width).astype(np.uint32)
    v_weights, v_bounds = _weights(height, top, bottom, out_height, code, support)
    if horizontal:
        # only the rows the vertical pass reads
        first, last = v_bounds[0, 0], v_bounds[-1, 0] + v_bounds[-1, 1]
        v_bounds[:, 0] -= first
        h_weights, h_bounds = _weights(width, left, right, out_width, code, support)
        pixels = _convolve(np.ascontiguousarray(pixels[first:last].T), h_weights, h_bounds, channels)
    if vertical:
        pixels = np.ascontiguousarray(_convolve(pixels, v_weights, v_bounds, channels).T)
    if channels == 3:
        return Image.frombytes("RGB", size, pixels.tobytes(), "raw", "RGBX")
    return Image.frombytes("L", size, pixels.astype(np.uint8).tobytes())


def load_kernels() -> None:
    """Compile the kernels, or load them from numba's cache (0.5 s; 3 s the first time after an
    install), in this process: worker processes forked afterwards inherit them ready to run."""
    for mode in _MODES:
        convolve_resize(Image.new(mode, (4, 4)), (3, 2), (0, 0, 4, 4), "bicubic")
