"""Licence labels from every backend come out in one spelling."""

import pytest

from kgclip.curate.licences import UNKNOWN, allowed, family, normalise


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
