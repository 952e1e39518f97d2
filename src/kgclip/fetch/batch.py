"""One batch of URLs: what each URL became, and the tar part and ledger rows a batch yields.

The batch is the unit that the executors (fetch/local_run.py, fetch/ray_run.py) hand back to
the stage: its part number is fixed before any work starts, so parts and member names are the
same whichever executor ran the batch and in whichever order batches finished.
"""

from __future__ import annotations

import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kgclip.fetch.http import FetchResult
from kgclip.fetch.images import ImageOptions, Normalized, Rejection, normalize
from kgclip.fetch.sources import LocalReads, read_source
from kgclip.tables import Fetched
from kgclip.tario import add_member
from kgclip.workdir import atomic_path

WEB = ("http://", "https://")


@dataclass(frozen=True)
class Batch:
    number: int
    part: str  # file name of the tar part this batch writes
    urls: list[str]
    local: LocalReads = field(default_factory=LocalReads)  # which URLs may be read locally, and where


@dataclass(frozen=True)
class Unfetched:
    """A web URL whose bytes never arrived: refused for good, or failed for now (retried later)."""

    reason: str
    retryable: bool


@dataclass(frozen=True)
class Outcome:
    """What one URL became, with the measurements the ledger keeps (None where not applicable)."""

    result: Normalized | Rejection | Unfetched
    source_bytes: int | None = None
    http_status: int | None = None
    attempts: int | None = None
    download_s: float | None = None
    decode_s: float | None = None


def unfetched(got: FetchResult) -> Outcome:
    return Outcome(
        Unfetched(got.reason, got.retryable), None, got.http_status, got.attempts, got.seconds, None
    )


def decode(item: str | FetchResult, opts: ImageOptions, roots: tuple[str, ...] = ()) -> Outcome:
    """Runs in a worker: take downloaded bytes (of a successful download) or read a local file
    (only below `roots`), then validate and normalise."""
    started = time.perf_counter()
    if isinstance(item, FetchResult):
        assert item.ok and item.body is not None, "failed downloads never reach a decoder"
        result = normalize(item.body, opts)
        elapsed = time.perf_counter() - started
        return Outcome(result, len(item.body), item.http_status, item.attempts, item.seconds, elapsed)
    data = read_source(item, opts.max_bytes, roots)
    if isinstance(data, Rejection):
        return Outcome(data)
    result = normalize(data, opts)
    return Outcome(result, len(data), None, None, None, time.perf_counter() - started)


def write_part(directory: Path, batch: Batch, outcomes: list[Outcome]) -> list[Fetched]:
    """Write the batch's stored images into its tar part (atomically) and return its ledger rows."""
    rows: list[Fetched] = []
    with atomic_path(directory / batch.part) as tmp, tarfile.open(tmp, "w") as tar:
        for i, (url, outcome) in enumerate(zip(batch.urls, outcomes, strict=True)):
            res = outcome.result
            measured = (outcome.source_bytes, outcome.http_status, outcome.attempts)
            measured += (outcome.download_s, outcome.decode_s)
            if isinstance(res, Unfetched):
                status = "failed" if res.retryable else "rejected"
                rows.append(_unstored(url, status, res.reason.split(":")[0], res.reason, *measured))
            elif isinstance(res, Rejection):
                rows.append(_unstored(url, "rejected", str(res.reason), res.detail, *measured))
            else:
                member = f"{batch.number:05d}{i:05d}"
                add_member(tar, f"{member}.jpg", res.jpeg)
                rows.append(
                    Fetched(
                        url,
                        "ok",
                        None,
                        None,
                        batch.part,
                        member,
                        res.orig_width,
                        res.orig_height,
                        res.width,
                        res.height,
                        len(res.jpeg),
                        res.source_sha256,
                        res.pixel_sha256,
                        *measured,
                        phash=res.phash,
                        colour=res.colour,
                    )
                )
    return rows


def _unstored(url: str, status: str, reason: str, detail: str, *measured: int | float | None) -> Fetched:
    """The row of a URL whose image was not stored: the outcome and measurements, no part or sizes."""
    nothing_stored = (None,) * 9  # part, member, sizes, bytes and hashes
    return Fetched(url, status, reason, detail, *nothing_stored, *measured)
