"""What every search backend provides, whether it is a local corpus or a paid web API.

The search stage owns the request ledger (so no request is ever paid for twice); a backend
only knows how to turn one query into results, and says whether a failure is worth retrying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kgclip.tables import Query


@dataclass(frozen=True, slots=True)
class Found:
    """One result as the backend reports it, before the stage ranks and records it."""

    url: str
    alt_text: str
    page_url: str | None = None
    width: int | None = None
    height: int | None = None
    license: str | None = None
    attribution: str | None = None
    # What matched, as compact JSON {"field", "words", "subject"}: the local corpus says; web
    # backends cannot know what a service matched and leave it None.
    evidence: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one request: results, or a failure with a reason.

    `retryable` failures (timeouts, 5xx) are tried again on the next run; the others
    (a query the backend cannot express) are final and recorded as rejects.
    """

    results: list[Found] = field(default_factory=list)
    failure: str | None = None
    retryable: bool = False


class SearchBackend(Protocol):
    name: str
    max_concurrency: int

    def fingerprint(self) -> str:
        """Identifies the result set: a changed corpus or API version invalidates cached answers."""
        ...

    def request_key(self, query: Query, k: int) -> str:
        """The ledger key: equal keys are the same request and are never sent twice."""
        ...

    async def search(self, query: Query, k: int) -> Outcome: ...

    def close(self) -> None: ...
