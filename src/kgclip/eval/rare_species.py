"""Rare Species (Hugging Face imageomics/rare-species): 400 IUCN Red List species, 11,983 EOL images.

Layout of the dataset repository at revision 06e9eae (the one EntityNet pins), as
`huggingface-cli download imageomics/rare-species --repo-type dataset --revision 06e9eae` leaves it:

    ROOT/metadata.csv                 one row per image: file_name, rarespecies_id, eol_content_id,
                                      eol_page_id, kingdom, phylum, class, order, family, genus,
                                      species (the epithet), sciName, common
    ROOT/dataset/<Kingdom-Phylum-Class-Order-Family-Genus-species>/<content>_<page>_eol-full-size-copy.jpg
    ROOT/metadata/rarespecies-catalog.csv, licenses.csv   (the same catalog without file_name; unused)

`file_name` is relative to ROOT (Hugging Face's imagefolder convention for a metadata.csv). Class
i is the i-th distinct `sciName` in sorted order, as EntityNet numbers them; images come in
`file_name` order. Column names are matched without regard to case.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kgclip.eval.folder import Listing, below, image_set
from kgclip.eval.sets import RANKS, ClassInfo, EvalSet, EvalSetError
from kgclip.localfiles import read_regular

METADATA = "metadata.csv"
REQUIRED = ("file_name", "sciname", *RANKS)


def open_rare_species(root: Path) -> EvalSet:
    """The whole set (it has no splits); a missing column or an empty catalog is an EvalSetError."""
    root = Path(root)
    meta = root / METADATA
    rows = sorted(_rows(meta), key=lambda r: r["file_name"])
    if not rows:
        raise EvalSetError(f"{meta}: no images listed")
    first: dict[str, dict[str, str]] = {}
    for row in rows:
        first.setdefault(row["sciname"], row)
    names = sorted(first)
    label_of = {sci: i for i, sci in enumerate(names)}
    listing = Listing(root)
    for row in rows:
        listing.add(below(root, row["file_name"], str(meta)), label_of[row["sciname"]])
    classes = [class_info(first[sci]) for sci in names]
    return image_set("rare_species", "rare-species", classes, listing, f"rare-species:{root}")


def class_info(row: dict[str, str]) -> ClassInfo:
    """Common name for display (the scientific name when there is none), the scientific name and ranks.

    `species` holds the epithet, so the species rank is "Genus epithet", as for iNaturalist.
    """
    sci = row["sciname"]
    common = row.get("common") or None
    taxonomy = {rank: row[rank] for rank in RANKS[:-1] if row[rank]}
    epithet = row["species"]
    if row["genus"] and epithet and " " not in epithet:
        taxonomy["species"] = f"{row['genus']} {epithet}"
    else:
        taxonomy["species"] = epithet or sci
    return ClassInfo(common or sci, scientific=sci, common=common, taxonomy=taxonomy)


def _rows(meta: Path) -> list[dict[str, str]]:
    """metadata.csv as dicts with lower-cased column names; a missing file or column is an error."""
    try:
        text = read_regular(meta).decode("utf-8-sig")
    except FileNotFoundError:
        raise EvalSetError(
            f"{meta}: missing (the Rare Species catalog with file_name; download the dataset repository "
            "imageomics/rare-species at revision 06e9eae)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"{meta}: cannot read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise EvalSetError(f"{meta}: no column {', '.join(missing)} (columns: {', '.join(header) or 'none'})")
    reader.fieldnames = header
    rows = []
    for n, row in enumerate(reader, 2):
        clean = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if not clean["file_name"] or not clean["sciname"]:
            raise EvalSetError(f"{meta}: line {n} has no file_name or sciName")
        rows.append(clean)
    return rows
