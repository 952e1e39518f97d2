"""Reading a local hit's bytes (file:// URLs and absolute paths). http(s) URLs go through the safe
web client (fetch/http.py) instead; any other scheme is refused with a reason.

A hit is other people's data: a web service's answer names whatever URL a publisher typed, and
hits.parquet is a file in the workdir. So a local file is read only for a hit of the local corpus
(`LocalReads`), only when its path resolves (symlinks followed) below one of that corpus's roots,
and only when it is a regular file: anything else is refused with a recorded reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from kgclip.config import Config
from kgclip.fetch.images import Rejection, RejectReason
from kgclip.localfiles import NotRegularFile, open_regular, within
from kgclip.search.corpus import CorpusBackend, corpus_index_path
from kgclip.search.importers import corpus_roots
from kgclip.workdir import Workdir


@dataclass(frozen=True)
class LocalReads:
    """Which URLs may be read from local files: the local corpus's hits, below its roots."""

    roots: tuple[str, ...] = ()
    urls: frozenset[str] = frozenset()

    def roots_for(self, url: str) -> tuple[str, ...]:
        """The folders `url` may be read from; none for a URL the corpus did not produce."""
        return self.roots if url in self.urls else ()


def corpus_roots_of(config: Config, workdir: Workdir) -> tuple[str, ...]:
    """The folders local corpus hits may be read from: the configured corpus's index's roots, or
    those of the source it will be built from; none without a corpus."""
    corpus = config.search.corpus
    if corpus is None:
        return ()
    index = corpus_index_path(config, workdir)
    if index.is_file():
        backend = CorpusBackend(index)
        try:
            roots = backend.roots
        finally:
            backend.close()
    else:
        roots = tuple(corpus_roots(corpus.source)) if corpus.source else ()
    return roots


def read_source(url: str, max_bytes: int, roots: tuple[str, ...] = ()) -> bytes | Rejection:
    """The bytes of a local hit allowed to be read below `roots`, or why it was not read."""
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
    if not roots:
        return Rejection(RejectReason.LOCAL_PATH_REFUSED, "local files are read only for local corpus hits")
    real = os.path.realpath(path)
    if not within(real, roots):
        return Rejection(RejectReason.LOCAL_PATH_REFUSED, f"{path} resolves outside the corpus folders")
    try:
        with open_regular(real) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                return Rejection(RejectReason.TOO_MANY_BYTES, f"{size} bytes > {max_bytes}")
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        return Rejection(RejectReason.NOT_FOUND, path)
    except NotRegularFile as exc:
        return Rejection(RejectReason.NOT_A_REGULAR_FILE, f"{path}: {exc.strerror}")
    except OSError as exc:
        return Rejection(RejectReason.UNREADABLE, str(exc))
