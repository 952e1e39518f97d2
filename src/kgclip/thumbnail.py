"""Small JPEG copies of pictures, for pages and reports: the viewer's grids, the example images of
an evaluation's confusions, the evaluation images decontamination matched."""

from __future__ import annotations

import io

from PIL import Image

UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def jpeg_thumbnail(data: bytes, size: int, quality: int = 85) -> bytes:
    """The image at most `size` pixels on its longer side, as RGB JPEG; raises one of UNREADABLE.
    JPEGs are decoded at a reduced scale (DCT scaling) when that still leaves `size` pixels."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (size, size))
        rgb = im.convert("RGB")
    rgb.thumbnail((size, size))
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality)
    return out.getvalue()
