"""Reading a local hit's bytes (file:// URLs and absolute paths). http(s) URLs go through the safe
web client (fetch/http.py) instead; any other scheme is refused with a reason."""

from __future__ import annotations

import os
import stat
from urllib.parse import unquote, urlparse

from kgclip.fetch.images import Rejection, RejectReason


def read_source(url: str, max_bytes: int) -> bytes | Rejection:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return Rejection(RejectReason.UNSUPPORTED_SCHEME, f"file URL with a host: {parsed.netloc}")
        path = unquote(parsed.path)
    elif parsed.scheme == "" and os.path.isabs(url):
        path = url
    else:
        scheme = parsed.scheme or "relative"
        return Rejection(
            RejectReason.UNSUPPORTED_SCHEME, f"{scheme} URLs are not fetched (file, http(s) are)"
        )
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return Rejection(RejectReason.NOT_FOUND, f"{path} is not a regular file")
        if info.st_size > max_bytes:
            return Rejection(RejectReason.TOO_MANY_BYTES, f"{info.st_size} bytes > {max_bytes}")
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        return Rejection(RejectReason.NOT_FOUND, path)
    except PermissionError as exc:
        return Rejection(RejectReason.UNREADABLE, str(exc))
