"""Contact sheets for marking an audit CSV by eye: 12 pictures a page, each with its row number,
caption, linked entity and the entity's gloss written under it.

    python scripts/audit_sheets.py tests/data/audit/demo-before-seed1.csv /tmp/sheets

Looking at one picture at a time is slow; a sheet shows twelve links at once, and doubtful ones are
then opened alone (the `image` column). Used for the hand audit in docs/audit.md.
"""

from __future__ import annotations

import csv
import sys
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLS, ROWS = 4, 3
CELL_W, PIC_H, TEXT_H = 330, 220, 190
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def sheet(rows: list[tuple[int, dict[str, str]]], base: Path, out: Path) -> None:
    """One page of up to COLS x ROWS links."""
    page = Image.new("RGB", (COLS * CELL_W, ROWS * (PIC_H + TEXT_H)), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(FONT, 13)
    bold = ImageFont.truetype(FONT.replace("Sans.ttf", "Sans-Bold.ttf"), 14)
    for i, (n, row) in enumerate(rows):
        x, y = (i % COLS) * CELL_W, (i // COLS) * (PIC_H + TEXT_H)
        pic = Image.open(base / row["image"]).convert("RGB")
        pic.thumbnail((CELL_W - 20, PIC_H - 10))
        page.paste(pic, (x + (CELL_W - pic.width) // 2, y + 5))
        draw.rectangle((x, y, x + CELL_W - 1, y + PIC_H + TEXT_H - 1), outline="#bbbbbb")
        ty = y + PIC_H
        draw.text((x + 6, ty), f"#{n}  -> {row['entity_name']}", fill="#b00000", font=bold)
        ty += 18
        lines = textwrap.wrap(f"caption: {row['caption']}", 44)[:2]
        lines += textwrap.wrap(f"gloss: {row['gloss']}", 44)[:6]
        lines += textwrap.wrap(f"queries: {row['query_texts']}", 44)[:1]
        for line in lines:
            draw.text((x + 6, ty), line, fill="black", font=font)
            ty += 16
    page.save(out)


def main(csv_path: Path, out_dir: Path) -> None:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(enumerate(csv.DictReader(fh), start=1))
    out_dir.mkdir(parents=True, exist_ok=True)
    per = COLS * ROWS
    for first in range(0, len(rows), per):
        sheet(rows[first : first + per], csv_path.parent, out_dir / f"sheet-{first // per + 1:02d}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
