"""The held-out split: which pictures go to `val/` instead of the training shards.

A picture (one sample after duplicate merging, so near copies travel together) is held out when
a hash of its kept pixels falls below `val_fraction`; with more candidates than `val_max`, those
with the smallest hashes stay. The hash is of the pixels, not of the sample key: keys are
positions and shift when a harvest grows, pixels do not, so a picture held out in one harvest is
held out in every larger one with the same settings, and growing `val_fraction` or `val_max` only
adds pictures. The seed is not part of it: runs with different seeds are evaluated on the same set.
"""

from __future__ import annotations

import hashlib

TRAIN = "train"
VAL = "val"


def val_draw(pixel_sha256: str) -> float:
    """A uniform number in [0, 1) fixed by the picture's pixels (blake2b: the same in any process)."""
    digest = hashlib.blake2b(f"kgclip-val:{pixel_sha256}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
