"""Perceptual hashes and the multi-index Hamming search."""

import io
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from kgclip.curate.hashindex import HashIndex
from kgclip.curate.phash import BITS, distance, phash, variants


def scene(seed: int, size=(400, 300)) -> Image.Image:
    """A picture of a few random shapes: distinct seeds give unrelated pictures."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        w, h = rng.randrange(40, 200), rng.randrange(40, 200)
        draw.ellipse((x, y, x + w, y + h), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def reencoded(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_hash_is_63_bits_and_deterministic():
    h = phash(scene(1))
    assert 0 < h < 2**BITS and h == phash(scene(1))


def test_copies_stay_close_and_other_pictures_stay_far():
    original = scene(7)
    copies = [
        original.resize((200, 150)),
        reencoded(original, 40),
        ImageOps.expand(original, border=25, fill="black"),
        original.point(lambda v: min(255, v + 12)),
    ]
    for copy in copies:
        assert distance(phash(copy), phash(original)) <= 6
    others = [phash(scene(s)) for s in range(100, 140)]
    assert min(distance(phash(original), o) for o in others) > 10


def test_crop_variants_catch_a_cropped_copy():
    original = scene(3)
    cropped = original.crop((36, 0, 400, 300))  # 9% off the left
    assert min(distance(phash(cropped), v) for v in variants(original)) <= 6
    assert variants(original)[0] == phash(original)


def test_a_plain_image_still_hashes():
    assert isinstance(phash(Image.new("RGB", (50, 50), "white")), int)
    assert len(variants(Image.new("L", (100, 100)))) == 11
    assert len(variants(Image.new("L", (10, 10)))) == 11  # hashed at the working size like any other


@pytest.mark.parametrize("radius", [0, 3, 7, 11])
def test_index_finds_exactly_what_brute_force_finds(radius):
    rng = np.random.default_rng(radius)
    stored = rng.integers(0, 2**63, size=3000, dtype=np.uint64)
    # queries near stored hashes (a few flipped bits) plus unrelated ones
    near = stored[:200] ^ np.array(
        [sum(1 << int(b) for b in rng.choice(63, k, replace=False)) for k in rng.integers(0, 12, 200)],
        dtype=np.uint64,
    )
    queries = np.concatenate([near, rng.integers(0, 2**63, size=200, dtype=np.uint64)])
    q, i, d = HashIndex(stored).search(queries, radius)
    brute = np.bitwise_count(queries[:, None] ^ stored[None, :])
    bq, bi = np.nonzero(brute <= radius)
    assert sorted(zip(q.tolist(), i.tolist(), strict=True)) == sorted(
        zip(bq.tolist(), bi.tolist(), strict=True)
    )
    assert (d == brute[q, i]).all()


def test_index_edge_cases():
    assert [len(a) for a in HashIndex([]).search([1, 2], 3)] == [0, 0, 0]
    assert [len(a) for a in HashIndex([1]).search([], 3)] == [0, 0, 0]
    with pytest.raises(ValueError):
        HashIndex([1]).search([1], 64)


def test_colour_tells_recoloured_drawings_apart():
    from kgclip.curate.phash import colour, colour_distance

    def flag(cloth: tuple[int, int, int]) -> Image.Image:
        image = Image.new("RGB", (200, 200), "white")
        draw = ImageDraw.Draw(image)
        draw.rectangle((30, 20, 40, 190), fill="black")  # the pole
        draw.polygon([(40, 25), (170, 50), (140, 80), (175, 110), (40, 100)], fill=cloth)
        return image

    red, green = flag((200, 30, 30)), flag((30, 150, 30))
    assert distance(phash(red), phash(green)) <= 6  # the hash alone would merge them
    assert colour_distance(colour(red), colour(green)) > 48
    brighter = red.point(lambda v: min(255, int(v * 1.1)))
    assert colour_distance(colour(red), colour(brighter)) <= 48
    assert colour(Image.new("RGB", (10, 10), (1, 2, 3))) == 0x010203


def test_keys_are_the_hash_and_mean_colour_of_the_trimmed_picture():
    """`keys` (what fetch stores) must equal the hash and ImageStat's channel means of what `trim`
    keeps, so harvested hashes stay comparable with indexed ones whatever shortcut keys takes."""
    from PIL import ImageStat

    from kgclip.curate.phash import _grey, _hash, _small, _trim_box, keys, trim

    framed = ImageOps.expand(scene(7), border=30, fill=(250, 250, 250))
    large = scene(8, size=(900, 700))  # reduced by an integer factor before hashing
    for image in (scene(6), framed, large, reencoded(framed, 40).convert("RGB")):
        small = _small(image)
        box = _trim_box(np.asarray(small.convert("L"), dtype=np.int16))
        means = ImageStat.Stat(small.crop(box)).mean
        expected_colour = sum(min(255, round(v)) << s for v, s in zip(means, (16, 8, 0), strict=True))
        assert keys(image) == (_hash(trim(_grey(image))), expected_colour) == (phash(image), expected_colour)
    assert box != (0, 0, *small.size)  # the framed copy was trimmed: the crop path is exercised


def test_the_block_size_bounds_memory_not_the_answer(monkeypatch):
    """Blocks shrink as more stored hashes share chunk values; the matches are the same."""
    from kgclip.curate import hashindex

    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**63, 5000, dtype=np.int64).astype(np.uint64)
    hashes[1::10] = hashes[::10] ^ np.uint64(0b10110)
    index = hashindex.HashIndex(hashes)
    whole = index.search(hashes, 6)
    table = hashindex.Table(hashes, 0)
    assert table.block(17) == hashindex.BLOCK  # few hashes: the largest blocks
    monkeypatch.setattr(hashindex, "CANDIDATES", 10_000)
    assert table.block(17) < 1000
    small = index.search(hashes, 6)
    assert all(np.array_equal(a, b) for a, b in zip(whole, small, strict=True))
    assert len(whole[0]) > len(hashes)  # the planted pairs, besides every hash with itself


def _planted(n: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(11)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    hashes[1::10] = hashes[::10] ^ np.uint64(0b1011)
    return hashes


def test_the_blocks_may_run_anywhere_in_any_order_and_give_the_same_matches(monkeypatch):
    """`search` hands its independent blocks to a runner (Ray tasks in curate); a runner that
    does them in reverse order gets the same answer, as long as it returns them by start."""
    from kgclip.curate import hashindex

    monkeypatch.setattr(hashindex, "CANDIDATES", 20_000)  # several blocks
    hashes = _planted()
    index = hashindex.HashIndex(hashes)
    seen: list[int] = []

    def backwards(table, queries, starts, block, radius, above):
        seen.extend(starts)
        found = {s: table.search_block(queries[s : s + block], s, radius, above) for s in reversed(starts)}
        return [found[s] for s in starts]

    got = index.search(hashes, 6, backwards)
    assert len(seen) > 3 * hashindex.CHUNKS  # several blocks of each chunk's table
    assert all(np.array_equal(a, b) for a, b in zip(got, index.search(hashes, 6), strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(index.pairs(6, backwards), index.pairs(6), strict=True))


def test_the_blocks_as_ray_tasks_give_the_same_matches(monkeypatch):
    pytest.importorskip("ray")
    from kgclip.config import RayConfig
    from kgclip.curate import hashindex
    from kgclip.curate.ray_run import ray_blocks

    monkeypatch.setattr(hashindex, "CANDIDATES", 20_000)
    hashes = _planted()
    index = hashindex.HashIndex(hashes)
    got = index.pairs(6, ray_blocks(RayConfig(num_cpus=2, tasks_in_flight=3)))
    assert all(np.array_equal(a, b) for a, b in zip(got, index.pairs(6), strict=True))


@pytest.mark.parametrize("radius", [0, 3, 6, 11])
def test_pairs_are_every_pair_within_the_radius_once(radius, monkeypatch):
    """The self-search proposes each pair once (a < b), never a hash with itself, and finds what
    comparing all pairs finds, also across blocks and with repeated hashes."""
    from kgclip.curate import hashindex

    monkeypatch.setattr(hashindex, "CANDIDATES", 5_000)  # several blocks
    rng = np.random.default_rng(radius)
    hashes = rng.integers(0, 2**63, 1500, dtype=np.int64).astype(np.uint64)
    hashes[1::7] = hashes[::7][: len(hashes[1::7])] ^ np.uint64(0b100101)  # near copies, 3 bits off
    hashes[2::50] = hashes[3::50][: len(hashes[2::50])]  # exact repeats
    a, b = hashindex.HashIndex(hashes).pairs(radius)
    brute = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= radius
    ba, bb = np.nonzero(np.triu(brute, k=1))
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == list(zip(ba.tolist(), bb.tolist(), strict=True))
    assert len(a) > 0


def test_correlated_bits_are_spread_over_the_chunks_and_the_pairs_stay_exact():
    """Hashes whose low 16 bits are copied into the next 16 (a pHash's neighbouring coefficients
    agree in the same way) would crowd one chunk's values; the layout puts each copied pair of bits
    in different chunks, so the runs a probe reads are short, and the pairs are those of brute force."""
    from kgclip.curate import hashindex

    rng = np.random.default_rng(5)
    low = rng.integers(0, 2**16, 3000, dtype=np.int64).astype(np.uint64) & np.uint64(0x00FF)  # 256 values
    rest = rng.integers(0, 2**31, 3000, dtype=np.int64).astype(np.uint64) << np.uint64(32)
    hashes = low | (low << np.uint64(8)) | (low << np.uint64(16)) | (low << np.uint64(24)) | rest
    hashes[1::9] = hashes[::9][: len(hashes[1::9])] ^ np.uint64(0b1000000100000010001)
    bits = hashindex._layout(hashes)
    assert sorted(bits.tolist()) == list(range(64))
    chunk_of = {int(b): i // hashindex.CHUNK_BITS for i, b in enumerate(bits)}
    for b in range(8):  # bit b is copied to b + 8, b + 16 and b + 24: four bits, four chunks
        assert len({chunk_of[b + k] for k in (0, 8, 16, 24)}) == 4
    index = hashindex.HashIndex(hashes)
    permuted = hashindex._permute(hashes, bits)
    longest = max(int(np.diff(hashindex.Table(permuted, c).starts).max()) for c in range(hashindex.CHUNKS))
    contiguous = int(np.bincount((hashes & np.uint64(0xFFFF)).astype(np.int64)).max())
    assert longest * 4 < contiguous  # 12 hashes against 23 per value of the low chunk, before
    for radius in (3, 6, 9):
        a, b = index.pairs(radius)
        brute = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= radius
        ba, bb = np.nonzero(np.triu(brute, k=1))
        assert np.array_equal(a, ba) and np.array_equal(b, bb)


def test_a_crowd_of_equal_hashes_finds_every_pair():
    """Far more matches than the compiled loop's first buffer: it grows and loses none."""
    hashes = np.full(300, 0x5A5A5A5A5A5A5A5, dtype=np.uint64)
    hashes[::3] ^= np.uint64(1 << 40)
    a, b = HashIndex(hashes).pairs(1)
    assert len(a) == 300 * 299 // 2
    assert np.array_equal(a * 300 + b, np.flatnonzero(np.triu(np.ones((300, 300), dtype=bool), k=1)))
    q, i, d = HashIndex(hashes).search(hashes[:5], 0)
    assert len(q) == 2 * 100 + 3 * 200 and set(d.tolist()) == {0}  # 0 and 3 are flipped
    assert np.array_equal(i[q == 3], np.arange(0, 300, 3)) and np.all(i[q == 1] % 3 != 0)
