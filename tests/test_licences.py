"""Licence labels from every backend come out in one spelling, and travel with the pixels they cover."""

import pytest

from curate_reference import filter_licences, group_duplicates
from kgclip.curate.licences import UNKNOWN, allowed, family, normalise
from kgclip.tables import Fetched, Hit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("BY-4.0", "CC-BY-4.0"),  # Openverse
        ("by-sa", "CC-BY-SA"),
        ("CC_BY_4_0", "CC-BY-4.0"),  # GBIF enum
        ("http://creativecommons.org/licenses/by-nc/4.0/legalcode", "CC-BY-NC-4.0"),  # GBIF URL
        ("CC BY-SA 4.0", "CC-BY-SA-4.0"),  # Commons LicenseShortName
        ("CC BY 2.5", "CC-BY-2.5"),
        ("CC-BY-NC", "CC-BY-NC"),  # iNaturalist
        ("cc-by-nc-nd", "CC-BY-NC-ND"),
        ("CC0", "CC0-1.0"),
        ("cc0-1.0", "CC0-1.0"),
        ("CC_0_1_0", "CC0-1.0"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
        ("Public domain", "PDM"),
        ("public-domain", "PDM"),  # Debian copyright files
        ("pdm", "PDM"),
        ("GPL-2+", "GPL-2+"),  # kept as given
        (None, UNKNOWN),
        ("", UNKNOWN),
        ("  ", UNKNOWN),
    ],
)
def test_normalise(raw, expected):
    assert normalise(raw) == expected


def test_families_and_filter():
    assert family("CC-BY-SA-4.0") == "cc-by-sa"
    assert family("CC0-1.0") == "cc0"
    assert family("PDM") == "pdm"
    assert family("CC-BY") == "cc-by"
    assert allowed("CC-BY-4.0", ["cc-by", "cc0", "pdm"])
    assert not allowed("CC-BY-NC-4.0", ["cc-by", "cc0", "pdm"])
    assert allowed("CC-BY-NC-4.0", ["CC-BY-NC-4.0"])
    assert not allowed(UNKNOWN, ["cc-by"])
    assert allowed(UNKNOWN, ["cc-by", "unknown"])
    assert allowed("anything", [])


LARGE, SMALL = "http://a.example/large.jpg", "http://b.example/small.jpg"


def copy(url: str, sha: str, width: int, height: int, phash: int) -> Fetched:
    return Fetched(url, "ok", None, None, "p", "m", width, height, width, height, 1, "s", sha, phash=phash)


def hit(url: str, licence: str | None = None, by: str | None = None, page: str | None = None) -> Hit:
    return Hit("q-koala", "corpus", 1, url, page, "A koala.", None, None, licence, by)


def large_unlicensed_and_small_cc0_crop() -> tuple[list[Fetched], list[Hit]]:
    """The reported case: a large copy with no licence and a small cropped CC0 copy by Bob,
    near duplicates (hashes two bits apart)."""
    fetched = [copy(LARGE, "a" * 64, 1000, 800, 0b1011 << 40), copy(SMALL, "b" * 64, 300, 240, 0b1000 << 40)]
    hits = [hit(LARGE, page="http://a.example/page"), hit(SMALL, "CC0", "Bob", "http://b.example/bob")]
    return fetched, hits


def test_a_merged_sample_carries_the_licence_of_the_pixels_it_keeps():
    fetched, hits = large_unlicensed_and_small_cc0_crop()
    [group] = group_duplicates(fetched, hits, near_distance=6)
    assert group.near == 1 and group.first.url == LARGE  # the larger pixels, without a filter
    assert group.licence() == (UNKNOWN, None)  # not Bob's CC0, which covers only his crop
    assert group.page_urls() == ["http://a.example/page", "http://b.example/bob"]
    assert filter_licences([group]) == ([group], [])


def test_a_licence_filter_keeps_the_pixels_of_a_copy_that_passes():
    fetched, hits = large_unlicensed_and_small_cc0_crop()
    [group] = group_duplicates(fetched, hits, near_distance=6, accepted=["cc0"])
    assert group.first.url == SMALL and group.pixel_sha256 == "b" * 64
    assert (group.first.width, group.first.height) == (300, 240)
    assert group.licence() == ("CC0-1.0", "Bob")
    assert group.page_urls()[0] == "http://b.example/bob"
    assert group.urls() == [SMALL, LARGE]  # every URL still listed, the kept pixels' first
    assert filter_licences([group]) == ([group], [])


def test_a_group_with_no_passing_copy_is_refused_for_licence():
    fetched, hits = large_unlicensed_and_small_cc0_crop()
    [group] = group_duplicates(fetched, hits, near_distance=6, accepted=["cc-by"])
    assert group.first.url == LARGE  # none passes: the largest, which the filter then refuses
    kept, refused = filter_licences([group])
    assert kept == [] and {r.item for r in refused} == {LARGE, SMALL}
    assert {(r.reason, r.detail) for r in refused} == {("licence", "unknown is not among cc-by")}


def test_identical_pixels_take_the_first_stated_licence_that_passes():
    """Exact copies are the same pixels, so any copy's stated licence covers them: the first by
    URL, or the first that passes the filter; an unlabelled copy never replaces a stated licence."""
    sha = "c" * 64
    fetched = [copy(f"http://{h}.example/x.jpg", sha, 500, 400, 1) for h in ("a", "b", "c")]
    hits = [
        hit("http://a.example/x.jpg", "CC BY-NC 4.0", "Alice", "http://a.example/alice"),
        hit("http://b.example/x.jpg", "CC0", "Bob", "http://b.example/bob"),
        hit("http://c.example/x.jpg"),
    ]

    def licence(*accepted: str) -> tuple[str, str | None]:
        [group] = group_duplicates(fetched, hits, accepted=accepted)
        return group.licence() if filter_licences([group])[0] else ("refused", group.licence()[0])

    assert licence() == ("CC-BY-NC-4.0", "Alice")
    assert licence("cc0") == ("CC0-1.0", "Bob")
    assert licence("cc-by-nc", "cc0") == ("CC-BY-NC-4.0", "Alice")  # both pass: the first by URL
    assert licence("cc-by-sa", "unknown") == ("refused", "CC-BY-NC-4.0")
    [group] = group_duplicates(fetched, hits, accepted=["cc0"])
    assert group.page_urls()[0] == "http://b.example/bob"  # the licence's page comes first
