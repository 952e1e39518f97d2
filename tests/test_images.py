"""normalize(): every rejection kind and every conversion, on fixtures made in memory with Pillow."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import multiprocessing
import pickle
import random
import struct
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor

import pytest
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin

from kgclip.config import FetchConfig
from kgclip.fetch.images import (
    MAX_JPEG_SCANS,
    ImageOptions,
    Normalized,
    Rejection,
    RejectReason,
    jpeg_scans,
    normalize,
    target_size,
)

DEFAULTS = ImageOptions.from_config(FetchConfig())
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def options(**changes: object) -> ImageOptions:
    return dataclasses.replace(DEFAULTS, **changes)


def stored(data: bytes, opts: ImageOptions = DEFAULTS) -> Normalized:
    result = normalize(data, opts)
    assert isinstance(result, Normalized), result
    return result


def rejected(data: bytes, opts: ImageOptions = DEFAULTS) -> Rejection:
    result = normalize(data, opts)
    assert isinstance(result, Rejection), result
    return result


def pixels(result: Normalized) -> Image.Image:
    image = Image.open(io.BytesIO(result.jpeg))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (result.width, result.height))
    return image


def close(colour: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 8) -> bool:
    """JPEG at quality 95 keeps flat areas within a few levels of the source colour."""
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


def halves(size: tuple[int, int], left: object, right: object, mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, size, left)
    # Pasting a new image rather than a colour: Pillow 13 pastes I;16 colours byte-swapped.
    image.paste(Image.new(mode, (size[0] - size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return image


def photo(width: int, height: int) -> Image.Image:
    """Something with detail everywhere, so a wrong resampling geometry would show."""
    return Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize((width, height)),
            Image.effect_noise((width, height), 40),
            Image.radial_gradient("L").resize((width, height)),
        ],
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixel data at all (an empty IDAT)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"") + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decode fail loudly, to prove a rejection came from the header alone."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- rejections --------------------------------------------------------------------------------


def test_empty_file() -> None:
    assert rejected(b"").reason == RejectReason.EMPTY_FILE


def test_too_many_bytes_is_checked_before_decoding(no_decoding: None) -> None:
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    result = rejected(data, options(max_bytes=len(data) - 1))
    assert result.reason == RejectReason.TOO_MANY_BYTES
    assert str(len(data)) in result.detail


def test_random_bytes_are_not_an_image() -> None:
    data = bytes([0]) + random.Random(7).randbytes(4095)
    result = rejected(data)
    assert result.reason == RejectReason.NOT_AN_IMAGE
    assert result.detail.startswith("unrecognised data")


def test_html_page_is_named_in_the_detail() -> None:
    page = b"\xef\xbb\xbf\n  <!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>"
    assert rejected(page) == Rejection(RejectReason.NOT_AN_IMAGE, "html document")


def test_svg_document_is_named_in_the_detail() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>'
    assert rejected(svg) == Rejection(RejectReason.NOT_AN_IMAGE, "svg document")


@pytest.mark.parametrize(("fmt", "keep"), [("JPEG", 0.6), ("PNG", 0.6), ("WEBP", 0.6)])
def test_truncated_file(fmt: str, keep: float) -> None:
    data = encode(photo(200, 150), fmt)
    assert rejected(data[: int(len(data) * keep)]).reason == RejectReason.TRUNCATED


def test_corrupt_pixel_data_is_a_decode_error() -> None:
    data = bytearray(encode(photo(64, 64), "PNG"))
    start = data.index(b"IDAT") + 6
    data[start : start + 8] = b"\xff" * 8
    result = rejected(bytes(data))
    assert result.reason == RejectReason.DECODE_ERROR
    assert "broken data stream" in result.detail


def test_broken_header_with_a_known_signature_is_a_decode_error() -> None:
    result = rejected(b"GIF89a\x00\x00\x00")
    assert result.reason == RejectReason.DECODE_ERROR
    assert result.detail.startswith("GIF signature")


def test_format_outside_the_accepted_list() -> None:
    result = rejected(encode(Image.new("RGB", (64, 64)), "PCX"))
    assert result == Rejection(RejectReason.UNSUPPORTED_FORMAT, "PCX is not an accepted format")


def test_decompression_bomb_is_refused_from_the_header(no_decoding: None) -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    result = rejected(data, options(max_pixels=100 * 100 - 1))
    assert result.reason == RejectReason.DECOMPRESSION_BOMB
    assert "10000 pixels" in result.detail


def progressive_jpeg(size: tuple[int, int] = (64, 64), mode: str = "RGB", **params: object) -> bytes:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    return encode(image, "JPEG", progressive=True, quality=90, **params)


def with_last_scan_repeated(data: bytes, times: int) -> bytes:
    """The hostile file of issue 11: the last scan (its SOS segment and entropy-coded data, up to
    EOI) copied `times` more times. libjpeg decodes every copy, so the cost grows with `times`."""
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    assert end == len(data) - 2
    return data[:end] + data[last:end] * times + data[end:]


def test_repeated_scans_are_refused_before_decoding(no_decoding: None) -> None:
    hostile = with_last_scan_repeated(progressive_jpeg(), 3000)
    started = time.perf_counter()
    result = rejected(hostile)
    assert result == Rejection(RejectReason.TOO_MANY_SCANS, f"more than {MAX_JPEG_SCANS} scans")
    assert time.perf_counter() - started < 0.5


def test_the_scan_limit_is_exact() -> None:
    """libjpeg writes 10 scans for colour: 90 more copies is the limit, 91 is one too many."""
    data = progressive_jpeg()
    assert stored(with_last_scan_repeated(data, MAX_JPEG_SCANS - 10)).width == 64
    assert rejected(with_last_scan_repeated(data, MAX_JPEG_SCANS - 9)).reason == RejectReason.TOO_MANY_SCANS


@pytest.mark.parametrize(
    ("mode", "params", "scans"),
    [
        ("RGB", {"progressive": False}, 1),
        ("RGB", {}, 10),
        ("L", {}, 6),
        ("CMYK", {}, 18),
        ("RGB", {"restart_marker_rows": 1}, 10),  # RSTn markers stay inside a scan
        ("L", {"progressive": False, "restart_marker_blocks": 1}, 1),
    ],
)
def test_scans_are_counted_from_the_marker_structure(mode: str, params: dict, scans: int) -> None:
    noise = Image.frombytes("RGB", (96, 64), random.Random(5).randbytes(96 * 64 * 3)).convert(mode)
    data = encode(noise, "JPEG", **{"progressive": True, "quality": 100, **params})
    assert data.count(b"\xff\x00") > 10  # stuffed 0xFF bytes in the entropy-coded data
    assert jpeg_scans(data, MAX_JPEG_SCANS) == scans
    assert jpeg_scans(with_last_scan_repeated(data, 500), 20) == 21  # counting stops past the limit
    assert stored(data).width == 96


def test_scan_markers_inside_a_segment_are_not_scans() -> None:
    """A comment (or an EXIF thumbnail) may hold 0xFFDA bytes or a whole JPEG: segments are skipped
    by their length, and fill bytes before a marker are allowed."""
    inner = b"\xff\xda" * 200
    comment = b"\xff\xfe" + (len(inner) + 2).to_bytes(2, "big") + inner
    data = progressive_jpeg((96, 64))
    data = data[:2] + comment + data[2:].replace(b"\xff\xda", b"\xff\xff\xff\xda", 1)
    assert jpeg_scans(data, MAX_JPEG_SCANS) == 10
    assert stored(data).width == 96


def test_header_declaring_huge_dimensions_allocates_nothing(no_decoding: None) -> None:
    """Pillow's own hard limit (2 × MAX_IMAGE_PIXELS) fires inside open; it must become a rejection too."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = rejected(png_header_only(100_000, 100_000))
    assert result.reason == RejectReason.DECOMPRESSION_BOMB
    assert caught == []


def test_pillow_bomb_warning_becomes_a_rejection_and_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    data = encode(Image.new("RGB", (100, 80)), "PNG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = rejected(data, options(max_pixels=5000))
    assert result.reason == RejectReason.DECOMPRESSION_BOMB
    assert caught == []


def test_a_max_pixels_above_pillows_limit_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    data = encode(Image.new("RGB", (100, 80)), "PNG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert stored(data, options(max_pixels=10_000)).width == 100
    assert caught == []


@pytest.mark.parametrize(("mode", "words"), [("F", "float"), ("LAB", "CIELab")])
def test_unsupported_mode(mode: str, words: str) -> None:
    result = rejected(encode(Image.new(mode, (64, 64)), "TIFF"))
    assert result.reason == RejectReason.UNSUPPORTED_MODE
    assert result.detail.startswith(f"{mode}:")
    assert words in result.detail


def test_32_bit_values_beyond_16_bits_are_not_guessed() -> None:
    result = rejected(encode(Image.new("I", (64, 64), 70_000), "TIFF"))
    assert result.reason == RejectReason.UNSUPPORTED_MODE


def test_too_small(no_decoding: None) -> None:
    result = rejected(encode(Image.new("RGB", (31, 400)), "PNG"), options(min_side=32))
    assert result.reason == RejectReason.TOO_SMALL
    assert "31×400" in result.detail


def test_corrupted_files_never_raise() -> None:
    """Random byte damage to every accepted format ends in a result, never an exception."""
    base = photo(96, 72)
    sources = [
        encode(base, "JPEG"),
        encode(base, "PNG"),
        encode(base.convert("P"), "GIF"),
        encode(base, "WEBP"),
        encode(base, "TIFF"),
        encode(base, "BMP"),
        encode(base, "ICO"),
    ]
    rng = random.Random(2024)
    for _ in range(300):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(min(len(data), 256))] = rng.randrange(256)
        data = data[: rng.randrange(1, len(data) + 1)]
        assert isinstance(normalize(bytes(data), DEFAULTS), Normalized | Rejection)


# --- conversions -------------------------------------------------------------------------------


def test_transparent_rgba_is_composited_on_white() -> None:
    image = halves((64, 64), (255, 0, 0, 0), (0, 0, 255, 255), mode="RGBA")
    out = pixels(stored(encode(image, "PNG")))
    assert close(out.getpixel((8, 32)), WHITE)
    assert close(out.getpixel((56, 32)), BLUE)


def test_palette_transparency_is_composited_on_white() -> None:
    image = halves((64, 64), 0, 1, mode="P")
    image.putpalette([*RED, *BLUE])
    out = pixels(stored(encode(image, "PNG", transparency=0)))
    assert close(out.getpixel((8, 32)), WHITE)
    assert close(out.getpixel((56, 32)), BLUE)


def test_greyscale_with_alpha_is_composited_on_white() -> None:
    image = halves((64, 64), (0, 0), (0, 255), mode="LA")
    out = pixels(stored(encode(image, "PNG")))
    assert close(out.getpixel((8, 32)), WHITE)
    assert close(out.getpixel((56, 32)), (0, 0, 0))


def test_cmyk_becomes_rgb() -> None:
    out = pixels(stored(encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG", quality=95)))
    assert close(out.getpixel((32, 32)), RED)


@pytest.mark.parametrize(("mode", "fmt"), [("L", "JPEG"), ("1", "PNG")])
def test_greyscale_and_bilevel_become_rgb(mode: str, fmt: str) -> None:
    image = halves((64, 64), 0, 255, mode=mode)
    out = pixels(stored(encode(image, fmt)))
    assert close(out.getpixel((8, 32)), (0, 0, 0))
    assert close(out.getpixel((56, 32)), WHITE)


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I", "TIFF")])
def test_16_bit_greyscale_is_scaled_not_clipped(mode: str, fmt: str) -> None:
    image = halves((64, 64), 32768, 1000, mode=mode)
    out = pixels(stored(encode(image, fmt)))
    assert close(out.getpixel((8, 32)), (128, 128, 128), tolerance=2)
    assert close(out.getpixel((56, 32)), (4, 4, 4), tolerance=2)


def test_exif_orientation_is_applied_and_swaps_sides() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the camera was turned 90° clockwise
    data = encode(halves((200, 100), RED, BLUE), "JPEG", exif=exif, quality=95)
    result = stored(data)
    assert (result.width, result.height, result.orig_width, result.orig_height) == (100, 200, 100, 200)
    out = pixels(result)
    assert close(out.getpixel((50, 20)), RED)
    assert close(out.getpixel((50, 180)), BLUE)


def test_exif_orientation_survives_a_resize() -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    result = stored(encode(photo(1600, 1200), "JPEG", exif=exif))
    assert (result.width, result.height, result.orig_width, result.orig_height) == (512, 683, 1200, 1600)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_image_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    result = stored(data)
    assert result.format == fmt
    assert close(pixels(result).getpixel((32, 32)), RED)


@pytest.mark.parametrize(
    ("resize", "expected"),
    [("shorter", (683, 512)), ("longer", (512, 384)), ("none", (1600, 1200))],
)
def test_resize_rules(resize: str, expected: tuple[int, int]) -> None:
    result = stored(encode(photo(1600, 1200), "BMP"), options(resize=resize))  # BMP: cheap to make
    assert (result.width, result.height) == expected
    assert (result.orig_width, result.orig_height) == (1600, 1200)


@pytest.mark.parametrize("resize", ["shorter", "longer"])
def test_small_images_are_never_enlarged(resize: str) -> None:
    result = stored(encode(photo(300, 200), "PNG"), options(resize=resize))
    assert (result.width, result.height) == (300, 200)


@pytest.mark.parametrize(
    ("size", "resize", "expected"),
    [
        ((1600, 1200), "shorter", (683, 512)),
        ((1200, 1600), "shorter", (512, 683)),
        ((1600, 1200), "longer", (512, 384)),
        ((513, 2000), "shorter", (512, 1996)),
        ((10_000, 2), "longer", (512, 1)),
        ((512, 512), "shorter", (512, 512)),
    ],
)
def test_target_size(size: tuple[int, int], resize: str, expected: tuple[int, int]) -> None:
    assert target_size(*size, resize, 512) == expected


@pytest.mark.parametrize(("source", "expected"), [((2000, 1500), (683, 512)), ((1999, 1333), (768, 512))])
def test_draft_decode_still_gives_the_exact_target(
    monkeypatch: pytest.MonkeyPatch, source: tuple[int, int], expected: tuple[int, int]
) -> None:
    scales: list[float] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        full_width = self.size[0]
        drafted = original(self, mode, size)
        scales.append(full_width / self.size[0])
        return drafted

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result = stored(encode(photo(*source), "JPEG"))
    assert scales and round(scales[0]) >= 2  # libjpeg scales by 1/2, 1/4 or 1/8, rounding sizes up
    assert (result.width, result.height) == expected


def test_no_draft_when_the_target_is_not_2x_smaller(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda *args: calls.append(args))
    assert stored(encode(photo(800, 600), "JPEG")).height == 512
    assert calls == []


def test_output_is_deterministic() -> None:
    data = encode(photo(900, 700), "JPEG")
    assert stored(data).jpeg == stored(data).jpeg


def test_pixel_hash_ignores_the_container_but_source_hash_does_not() -> None:
    image = photo(120, 90)
    fast = encode(image, "PNG", compress_level=1)
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone")
    tagged = encode(image, "PNG", compress_level=9, pnginfo=text)
    lossless_webp = encode(image, "WEBP", lossless=True)
    results = [stored(data) for data in (fast, tagged, lossless_webp)]
    assert len({r.pixel_sha256 for r in results}) == 1
    assert len({r.source_sha256 for r in results}) == 3


def test_pixel_hash_ignores_jpeg_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "ACME Camera"
    image = photo(120, 90)
    plain, tagged = stored(encode(image, "JPEG")), stored(encode(image, "JPEG", exif=exif, comment=b"hi"))
    assert plain.pixel_sha256 == tagged.pixel_sha256
    assert plain.source_sha256 != tagged.source_sha256


def test_different_pixels_give_different_pixel_hashes() -> None:
    first = stored(encode(Image.new("RGB", (64, 64), RED), "PNG"))
    second = stored(encode(Image.new("RGB", (64, 64), BLUE), "PNG"))
    assert first.pixel_sha256 != second.pixel_sha256


def test_output_has_no_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "ACME Camera"
    icc = b"\x00" * 128 + b"fake icc profile"
    data = encode(photo(200, 150), "JPEG", exif=exif, icc_profile=icc, comment=b"hello", xmp=b"<x:xmpmeta/>")
    source = Image.open(io.BytesIO(data))
    assert {"exif", "icc_profile", "comment", "xmp"} <= source.info.keys()

    result = stored(data)
    out = pixels(result)
    assert not {"exif", "icc_profile", "comment", "xmp"} & out.info.keys()
    assert len(out.getexif()) == 0
    assert b"Exif\x00\x00" not in result.jpeg
    assert b"ICC_PROFILE" not in result.jpeg
    assert b"hello" not in result.jpeg
    assert (result.format, result.source_sha256) == ("JPEG", hashlib.sha256(data).hexdigest())


# --- options and worker processes --------------------------------------------------------------


def test_options_from_config() -> None:
    config = FetchConfig(
        resize="longer", size=256, jpeg_quality=80, min_side=8, max_pixels=10**6, max_bytes=99
    )
    assert ImageOptions.from_config(config) == ImageOptions("longer", 256, 80, 8, 10**6, 99)
    lanczos = FetchConfig(resample="lanczos")
    assert ImageOptions.from_config(lanczos).resample == "lanczos"


def test_resample_filter_is_used() -> None:
    """Fine stripes survive differently through each filter; the size is the same."""
    stripes = Image.new("L", (900, 600))
    stripes.putdata([255 * ((x // 3) % 2) for _y in range(600) for x in range(900)])
    data = encode(stripes.convert("RGB"), "PNG")
    made = {f: stored(data, options(resample=f)) for f in ("bicubic", "lanczos", "bilinear")}
    assert {(r.width, r.height) for r in made.values()} == {(768, 512)}
    assert len({r.pixel_sha256 for r in made.values()}) == 3


@pytest.mark.parametrize(
    "change", [{"resize": "widest"}, {"size": 0}, {"jpeg_quality": 101}, {"resample": "nearest"}]
)
def test_bad_options_fail_at_construction(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        options(**change)


def test_values_pickle() -> None:
    result = stored(encode(photo(64, 64), "PNG"))
    for value in (DEFAULTS, result, Rejection(RejectReason.TRUNCATED, "x"), normalize):
        assert pickle.loads(pickle.dumps(value)) == value


def test_normalize_runs_in_a_process_pool() -> None:
    inputs = [encode(photo(700, 600), "JPEG"), b"<html></html>", b""]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(normalize, inputs, [DEFAULTS] * len(inputs)))
    assert results == [normalize(data, DEFAULTS) for data in inputs]
    assert isinstance(results[0], Normalized)
    assert [r.reason for r in results[1:]] == [RejectReason.NOT_AN_IMAGE, RejectReason.EMPTY_FILE]
