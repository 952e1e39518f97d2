"""Validate one downloaded image and normalise it into the stored form (method.md §6).

`normalize` is the fetch stage's hot path and runs in worker processes: it is a pure module-level
function of (bytes, options) that returns a value for every input, so a corrupted or hostile file
becomes a `Rejection` and never an exception or a printed warning in the worker.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import io
import math
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from PIL import ExifTags, Image, ImageFile

from kgclip.config import FetchConfig
from kgclip.curate.phash import keys
from kgclip.fetch.resample import SUPPORT, convolve_resize
from kgclip.fetch.resample import Filter as Resample

ResizeMode = Literal["shorter", "longer", "none"]

# Formats that web image hosts serve (plus TIFF, which Wikimedia Commons hosts). Everything else is
# refused before decoding, which also keeps Pillow from handing EPS files to Ghostscript.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF", "ICO")
# The file names of those formats, for importers of local folders (search/importers.py): every file
# fetch would accept, whatever Pillow build is installed (.mpo is a JPEG with more frames).
ACCEPTED_EXTENSIONS: dict[str, str] = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".mpo": "JPEG",
    ".png": "PNG",
    ".apng": "PNG",
    ".gif": "GIF",
    ".webp": "WEBP",
    ".avif": "AVIF",
    ".avifs": "AVIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".ico": "ICO",
}

# What Pillow raises on malformed input, at open, load or metadata parsing time. IndexError,
# TypeError and KeyError come out of plugins that index into corrupt headers; the AVIF plugin
# reports decoder failures as RuntimeError.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
    RuntimeError,
)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# Shrink by a fast integer box reduction first while the remaining filter step stays >= 3x: per
# Pillow's docs this is indistinguishable from the plain filter and much faster on big sources.
_REDUCING_GAP = 3.0
_SNIFF_BYTES = 1024

# A progressive JPEG's decoding cost grows with its number of scans times its pixels, and libjpeg
# accepts any number of scans: a 740 KB file with its last scan repeated 3,000 times took six
# minutes. Encoders write about 10 (libjpeg's and mozjpeg's scripts: 10 for colour, 6 for grey);
# beyond this many the file is refused before decoding, which bounds the work per image together
# with max_pixels.
MAX_JPEG_SCANS = 100
# Entropy-coded data ends at the next marker: an 0xFF not followed by 0x00 (a stuffed 0xFF byte),
# by 0xD0-0xD7 (restart markers, which stay inside the scan) or by another 0xFF (fill before a marker).
_ENTROPY_END = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})  # TEM, RSTn, SOI: no length field
_SOS, _EOI = 0xDA, 0xD9


class RejectReason(StrEnum):
    """Why a hit was not stored; one closed set for the whole fetch stage, so statistics group by it.

    The first five come from reading the source (fetch/sources.py), the rest from `normalize`.
    """

    UNSUPPORTED_SCHEME = "unsupported_scheme"
    NOT_FOUND = "not_found"
    UNREADABLE = "unreadable"
    LOCAL_PATH_REFUSED = "local_path_refused"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    EMPTY_FILE = "empty_file"
    TOO_MANY_BYTES = "too_many_bytes"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TRUNCATED = "truncated"
    DECOMPRESSION_BOMB = "decompression_bomb"
    TOO_MANY_SCANS = "too_many_scans"
    UNSUPPORTED_MODE = "unsupported_mode"
    TOO_SMALL = "too_small"
    DECODE_ERROR = "decode_error"


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """The `FetchConfig` fields a worker needs, as a small picklable value."""

    resize: ResizeMode
    size: int
    jpeg_quality: int
    min_side: int
    max_pixels: int
    max_bytes: int
    resample: Resample = "bicubic"

    def __post_init__(self) -> None:
        # Fail here, in the caller, rather than have a bad option turn every image into a rejection.
        if self.resize not in ("shorter", "longer", "none"):
            raise ValueError(f"resize must be 'shorter', 'longer' or 'none', not {self.resize!r}")
        if min(self.size, self.min_side, self.max_pixels, self.max_bytes) < 1:
            raise ValueError("size, min_side, max_pixels and max_bytes must be positive")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be within 1..100")
        if self.resample not in SUPPORT:
            raise ValueError(f"resample must be one of {', '.join(SUPPORT)}, not {self.resample!r}")

    @classmethod
    def from_config(cls, config: FetchConfig) -> ImageOptions:
        names = [field.name for field in dataclasses.fields(cls)]
        return cls(**{name: getattr(config, name) for name in names})


@dataclass(frozen=True, slots=True)
class Normalized:
    """A stored image and the keys to find its copies.

    Sizes are upright (after EXIF orientation), so original and stored sizes share one frame.
    `source_sha256` names the downloaded bytes; `pixel_sha256` is the exact-duplicate key, a hash of
    the stored pixels (see `_pixel_sha256`); `phash` the perceptual hash of the stored image, the
    near-duplicate and decontamination key (curate/phash.py), computed here while the pixels are
    decoded anyway. `format` is the source's Pillow format name.
    """

    jpeg: bytes
    width: int
    height: int
    orig_width: int
    orig_height: int
    source_sha256: str
    pixel_sha256: str
    format: str
    phash: int
    colour: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one input was refused: `reason` for counting, `detail` for a person reading the log."""

    reason: RejectReason
    detail: str


@dataclass(slots=True)
class _Decoded:
    """A fully loaded source plus what was learnt from its header before the pixels were decoded."""

    image: Image.Image
    format: str
    orig_size: tuple[int, int]
    target: tuple[int, int]
    box: tuple[float, ...] | None
    transpose: Image.Transpose | None


def normalize(data: bytes, opts: ImageOptions) -> Normalized | Rejection:
    """Verify `data` by decoding it fully and return the stored JPEG, or why it was refused."""
    if not data:
        return Rejection(RejectReason.EMPTY_FILE, "0 bytes")
    if len(data) > opts.max_bytes:
        return Rejection(RejectReason.TOO_MANY_BYTES, f"{len(data)} bytes > max_bytes {opts.max_bytes}")
    with _pillow_warnings(opts.max_pixels):
        decoded = _decode(data, opts)
        if isinstance(decoded, Rejection):
            return decoded
        return _store(decoded, data, opts.jpeg_quality, opts.resample)


def target_size(width: int, height: int, resize: ResizeMode, size: int) -> tuple[int, int]:
    """The stored size: `size` bounds the shorter or longer side, rounded half up, never enlarged.

    Integer arithmetic keeps the result exact and identical on every platform (1600×1200 with
    "shorter" and 512 gives 683×512).
    """
    if resize == "none":
        return width, height
    bound = min(width, height) if resize == "shorter" else max(width, height)
    if bound <= size:
        return width, height
    return _scale_side(width, bound, size), _scale_side(height, bound, size)


def _scale_side(side: int, bound: int, size: int) -> int:
    return max(1, (2 * side * size + bound) // (2 * bound))


@contextmanager
def _pillow_warnings(max_pixels: int) -> Iterator[None]:
    """Silence Pillow's warnings (corrupt EXIF, ...) and make its bomb warning an exception.

    Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that. The warning becomes a
    rejection only when our own limit is not higher than Pillow's; otherwise our header check is
    the one that decides. `warnings.catch_warnings` is process-wide state, which is why this
    module is meant for worker processes rather than threads.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pillow_limit = Image.MAX_IMAGE_PIXELS
        if pillow_limit is not None and max_pixels <= pillow_limit:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _decode(data: bytes, opts: ImageOptions) -> _Decoded | Rejection:
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        refused = _check_header(image.size, opts) or _check_scans(image.format, data)
        if refused is not None:
            return refused
        orig_size = image.size
        target = target_size(*orig_size, opts.resize, opts.size)
        box = _draft(image, target)
        image.load()
        return _Decoded(image, image.format or "", orig_size, target, box, _orientation(image))
    except Image.UnidentifiedImageError:
        return _unidentified(data)
    except _BOMB_ERRORS as exc:
        return Rejection(RejectReason.DECOMPRESSION_BOMB, str(exc))
    except _DECODE_ERRORS as exc:
        return _decode_failure(exc, data)


def _check_header(size: tuple[int, int], opts: ImageOptions) -> Rejection | None:
    """Refuse from the header alone, before a single pixel is decoded or allocated."""
    width, height = size
    if width * height > opts.max_pixels:
        return Rejection(
            RejectReason.DECOMPRESSION_BOMB,
            f"{width}×{height} = {width * height} pixels > max_pixels {opts.max_pixels}",
        )
    if min(width, height) < opts.min_side:
        return Rejection(RejectReason.TOO_SMALL, f"{width}×{height}: shorter side < min_side {opts.min_side}")
    return None


def _check_scans(image_format: str | None, data: bytes) -> Rejection | None:
    """Refuse a JPEG with more scans than any encoder writes, before its scans are decoded."""
    if image_format not in ("JPEG", "MPO"):
        return None
    scans = jpeg_scans(data, MAX_JPEG_SCANS)
    if scans <= MAX_JPEG_SCANS:
        return None
    return Rejection(RejectReason.TOO_MANY_SCANS, f"more than {MAX_JPEG_SCANS} scans")


def jpeg_scans(data: bytes, stop_after: int) -> int:
    """The number of scans (SOS segments) of the first image in a JPEG stream, counted up to
    `stop_after + 1`, from the marker structure alone: segments are skipped by their length and
    each scan's entropy-coded data by a search for the marker that ends it.

    A structure that stops making sense ends the count; the decoder then judges the file.
    Segments are skipped whole, so a JPEG thumbnail inside an EXIF segment does not count.
    """
    scans, pos = 0, 2  # after SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        pos += 2
        if marker == _EOI:
            break
        if marker in _STANDALONE_MARKERS:
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            break
        pos += length
        if marker == _SOS:
            scans += 1
            end = _ENTROPY_END.search(data, pos)
            if scans > stop_after or end is None:
                break
            pos = end.start()
    return scans


def _draft(image: ImageFile.ImageFile, target: tuple[int, int]) -> tuple[float, ...] | None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is at least 2× smaller.

    Draft only picks a scale whose result is still at least the target, and the returned box
    (the source area in reduced pixels) lets the final resize hit the exact target geometry.
    Non-JPEG images have no draft mode and return None.
    """
    width, height = image.size
    if width < 2 * target[0] or height < 2 * target[1]:
        return None
    drafted = image.draft("RGB", target)
    return None if drafted is None else drafted[1]


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({_TRANSPOSE[5], _TRANSPOSE[6], _TRANSPOSE[7], _TRANSPOSE[8]})


def _orientation(image: Image.Image) -> Image.Transpose | None:
    """The EXIF/XMP orientation as ImageOps.exif_transpose reads it, to apply after resizing.

    Transposing the small result instead of the decoded source saves a full-size copy. A file
    whose metadata cannot be parsed keeps its pixels as stored: the pixels themselves decoded.
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation)
    except _DECODE_ERRORS:
        return None
    return _TRANSPOSE.get(value) if isinstance(value, int) else None


def _decode_failure(exc: Exception, data: bytes) -> Rejection:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError) or "truncated" in message.lower():
        return Rejection(RejectReason.TRUNCATED, message)
    if _riff_is_short(data):
        declared = int.from_bytes(data[4:8], "little") + 8
        return Rejection(RejectReason.TRUNCATED, f"RIFF header declares {declared} bytes, got {len(data)}")
    return Rejection(RejectReason.DECODE_ERROR, f"{type(exc).__name__}: {message}")


def _riff_is_short(data: bytes) -> bool:
    """libwebp reports a cut file only as "could not create decoder object"; its RIFF header knows better."""
    return data[:4] == b"RIFF" and len(data) < int.from_bytes(data[4:8], "little") + 8


def _store(decoded: _Decoded, data: bytes, quality: int, kind: Resample) -> Normalized | Rejection:
    working = working_mode(decoded.image)
    if isinstance(working, Rejection):
        return working
    image = _resize(working, decoded.target, decoded.box, kind)
    if image.mode != "RGB":
        image = image.convert("RGB")
    orig_width, orig_height = decoded.orig_size
    if decoded.transpose is not None:
        image = image.transpose(decoded.transpose)
        if decoded.transpose in _SWAPS_SIDES:
            orig_width, orig_height = orig_height, orig_width
    picture_hash, mean_colour = keys(image)
    return Normalized(
        jpeg=_encode(image, quality),
        width=image.width,
        height=image.height,
        orig_width=orig_width,
        orig_height=orig_height,
        source_sha256=hashlib.sha256(data).hexdigest(),
        pixel_sha256=_pixel_sha256(image),
        format=decoded.format,
        phash=picture_hash,
        colour=mean_colour,
    )


_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
_TRANSPARENCY_KEY_MODES = frozenset({"1", "L", "P", "RGB"})  # alpha via info["transparency"] / palette
_TO_RGB_MODES = frozenset({"P", "CMYK", "YCbCr", "HSV", "RGBX"})
_REFUSED_MODES = {
    "F": "32-bit float pixels have no agreed display range",
    "LAB": "CIELab pixels need colour management to become RGB",
}


def working_mode(image: Image.Image) -> Image.Image | Rejection:
    """Bring every accepted mode to L or RGB, the only modes resizing and encoding then see.

    Greyscale stays single-channel through the resize (a third of the work) and becomes RGB only
    at the end; transparency is flattened on white because the stored JPEG has no alpha.
    """
    mode = image.mode
    if mode in _ALPHA_MODES or (mode in _TRANSPARENCY_KEY_MODES and image.has_transparency_data):
        return _on_white(image)
    if mode in ("RGB", "L"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in _TO_RGB_MODES:
        return image.convert("RGB")
    if mode == "I" or mode.startswith("I;16"):
        return _sixteen_bit_to_l(image)
    why = _REFUSED_MODES.get(mode, "no faithful RGB conversion")
    return Rejection(RejectReason.UNSUPPORTED_MODE, f"{mode}: {why}")


def _on_white(image: Image.Image) -> Image.Image:
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba)
    return white


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image | Rejection:
    """Scale 0..65535 onto 0..255 with rounding; Pillow's own conversion clips everything above 255.

    Mode I (32-bit) is read as 16-bit data, which is what PNG and most TIFFs put there; values
    outside that range have no known scale and are refused rather than guessed.
    """
    if image.mode == "I":
        low, high = image.getextrema()
        if low < 0 or high > 65535:
            detail = f"I: values {low}..{high} exceed the 16-bit range"
            return Rejection(RejectReason.UNSUPPORTED_MODE, detail)
        wide = image
    else:
        wide = image.convert("I")
    return wide.point(lambda value: value / 257 + 0.5).convert("L")


def _resize(
    image: Image.Image, target: tuple[int, int], box: tuple[float, ...] | None, kind: Resample
) -> Image.Image:
    """`image.resize(target, kind, box, reducing_gap=3)` as Pillow up to 12 computes it, faster."""
    box = box or (0, 0, *image.size)
    if image.size == target and box == (0, 0, *image.size):
        return image
    image, box = _reduce(image, target, box, kind)
    return convolve_resize(image, target, box, kind)


def _reduce(
    image: Image.Image, target: tuple[int, int], box: tuple[float, ...], kind: Resample
) -> tuple[Image.Image, tuple[float, ...]]:
    """Pillow's `reducing_gap` step: average whole blocks of pixels while the filter would still
    shrink at least 3x, keeping the margin the filter reads around the box; the box is then
    counted in the reduced pixels."""
    scale_x = (box[2] - box[0]) / target[0]
    scale_y = (box[3] - box[1]) / target[1]
    factor_x = int(scale_x / _REDUCING_GAP) or 1
    factor_y = int(scale_y / _REDUCING_GAP) or 1
    if factor_x == 1 and factor_y == 1:
        return image, box
    margin = SUPPORT[kind] - 0.5
    margin_x, margin_y = margin * scale_x, margin * scale_y
    left, top = max(0, int(box[0] - margin_x)), max(0, int(box[1] - margin_y))
    right = min(image.width, math.ceil(box[2] + margin_x))
    bottom = min(image.height, math.ceil(box[3] + margin_y))
    reduced = image.reduce((factor_x, factor_y), box=(left, top, right, bottom))
    return reduced, (
        (box[0] - left) / factor_x,
        (box[1] - top) / factor_y,
        (box[2] - left) / factor_x,
        (box[3] - top) / factor_y,
    )


def _pixel_sha256(image: Image.Image) -> str:
    """The exact-duplicate key: a hash of the stored RGB pixels and their size, not of the file.

    Two sources whose pixels agree after normalisation (a PNG and its lossless re-save, a copy
    with its metadata stripped) share the key although their bytes, and so `source_sha256`,
    differ. The size is hashed too because the same bytes can be laid out as 2×8 or 4×4. JPEG
    decoding may differ between libjpeg builds, so compare keys made by one Pillow build.
    """
    digest = hashlib.sha256(b"%dx%d:" % image.size)
    digest.update(image.tobytes())
    return digest.hexdigest()


def _encode(image: Image.Image, quality: int) -> bytes:
    """Baseline JPEG with no EXIF, ICC, XMP or comment; the same pixels always give the same bytes.

    Subsampling is fixed rather than left to Pillow's default so the output cannot change with a
    library upgrade; `comment` is passed empty because Pillow otherwise copies a source comment.
    """
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, subsampling="4:2:0", comment=b"")
    return out.getvalue()


def _unidentified(data: bytes) -> Rejection:
    """Say what the bytes are, because "not an image" alone does not tell a soft 404 from junk."""
    document = _describe_document(data[:_SNIFF_BYTES])
    if document is not None:
        return Rejection(RejectReason.NOT_AN_IMAGE, document)
    other = _other_format(data)
    if other is not None:
        return Rejection(RejectReason.UNSUPPORTED_FORMAT, f"{other} is not an accepted format")
    signature = _signature(data)
    if signature is not None:
        detail = f"{signature} signature but unreadable header (truncated or corrupt)"
        return Rejection(RejectReason.DECODE_ERROR, detail)
    return Rejection(RejectReason.NOT_AN_IMAGE, f"unrecognised data starting {data[:8].hex(' ')}")


_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


def _describe_document(head: bytes) -> str | None:
    """Servers answer image URLs with error pages, SVG or JSON; name them in the detail."""
    head = head.removeprefix(codecs.BOM_UTF8).lstrip().lower()
    if head.startswith(_HTML_STARTS):
        return "html document"
    if b"<svg" in head:
        return "svg document"
    if b"<html" in head:
        return "html document"
    if not _is_text(head):
        return None
    if head.startswith(b"<"):
        return "xml document"
    if head.startswith((b"{", b"[")):
        return "json document"
    return "text document"


def _is_text(head: bytes) -> bool:
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\t\n\r\f" for char in text)


def _other_format(data: bytes) -> str | None:
    """A format Pillow knows but we refuse (PSD, EPS, ...): identified from the header only."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except (*_DECODE_ERRORS, *_BOMB_ERRORS):
        return None


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
)


def _signature(data: bytes) -> str | None:
    """The accepted format a broken file claims to be, so its detail says truncated-or-corrupt."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    return None
