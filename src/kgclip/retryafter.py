"""The one reader of HTTP `Retry-After` headers (RFC 9110 §10.2.3), for every client in kgclip.

The value is either a number of seconds ("120") or an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT",
also the obsolete RFC 850 and asctime forms). A date is turned into the seconds left until it; a
date in the past means "now" (0). HTTP dates are GMT by definition, so a date without a zone
("-0000", asctime) is read as UTC, never as the machine's local time. Anything else (negative,
not a number, not finite, not a date) is no answer: None, and the caller uses its own backoff.
"""

import email.utils
import math
import time
from datetime import UTC


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header value, or None when it says nothing usable.

    `now` (a Unix time) is for tests; by default the current time."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
