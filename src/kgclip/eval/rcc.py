"""A pure-Python reader of Qt binary resource files (`.rcc`, format versions 1 to 3).

GCompris ships its photos inside such bundles (Debian's gcompris-qt-data), and no Python package
reads them; Qt's own `rcc` tool only writes them. The format (Qt's qresource.cpp):

- header: `qres`, then big-endian 32-bit format version, tree offset, data offset, names offset,
  and in version 3 a flags word (which compressions occur);
- tree: records of 14 bytes (version 1) or 22 bytes (versions 2 and 3, which add a 64-bit
  modification time); record 0 is the root directory. A record is a 32-bit name offset and 16-bit
  flags, then for a directory (flag 2) a 32-bit child count and the index of its first child (the
  children are consecutive records), and for a file a 16-bit country, a 16-bit language and a
  32-bit data offset;
- names: a 16-bit character count, a 32-bit hash, then the name in UTF-16 big-endian;
- data: a 32-bit length, then the payload; flag 1 means zlib (`qCompress`: a 4-byte big-endian
  uncompressed size, then a zlib stream), flag 4 zstd (which this reader refuses by name).

Every offset is checked against the file's size, so a truncated or foreign file is an RccError
that says what is wrong rather than an IndexError or a silent garbage read.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from kgclip.localfiles import read_regular

MAGIC = b"qres"
VERSIONS = (1, 2, 3)
COMPRESSED = 0x01
DIRECTORY = 0x02
COMPRESSED_ZSTD = 0x04
MAX_DEPTH = 64  # deeper trees only come from a corrupt file whose directories point back up


class RccError(ValueError):
    """A file that is not a Qt resource file, or one that is damaged: the message names it and why."""


@dataclass(frozen=True)
class RccEntry:
    """One file of the bundle: its path (`/a/b.webp`), flags, where its data is, and its locale."""

    path: str
    flags: int
    data_offset: int
    country: int = 0
    language: int = 0

    @property
    def compression(self) -> str | None:
        if self.flags & COMPRESSED_ZSTD:
            return "zstd"
        return "zlib" if self.flags & COMPRESSED else None


class RccFile:
    """The listing and contents of one `.rcc` file, read whole (the largest GCompris one is 4.7 MB)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._buf = read_regular(self.path)
        except OSError as exc:
            raise RccError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        self.version, self._tree, self._data, self._names = self._header()
        self._record = 14 if self.version == 1 else 22
        self.entries: dict[str, RccEntry] = {}
        self._seen: set[int] = set()
        self._walk(0, "", 0)

    def paths(self) -> list[str]:
        """Every file's path, in the bundle's order (sorted by name hash within a directory, as Qt)."""
        return list(self.entries)

    def read(self, path: str) -> bytes:
        """The uncompressed bytes of the file at `path` (as `paths()` lists it)."""
        entry = self.entries.get(path)
        if entry is None:
            raise RccError(f"{self.path}: no resource {path}")
        start = self._data + entry.data_offset
        (size,) = self._unpack(">I", start, f"the length of {path}")
        payload = self._slice(start + 4, size, f"the data of {path}")
        if entry.compression == "zstd":
            raise RccError(f"{self.path}: {path} is zstd-compressed, which this reader does not support")
        if entry.compression == "zlib":
            return self._inflate(payload, path)
        return payload

    def _header(self) -> tuple[int, int, int, int]:
        if self._buf[:4] != MAGIC:
            raise RccError(f"{self.path}: not a Qt resource file (no 'qres' magic at the start)")
        version, tree, data, names = self._unpack(">4I", 4, "the header")
        if version not in VERSIONS:
            raise RccError(f"{self.path}: Qt resource format version {version}; this reader knows 1 to 3")
        for what, offset in (("tree", tree), ("data", data), ("names", names)):
            if offset >= len(self._buf):
                raise RccError(f"{self.path}: truncated: the {what} area starts at {offset}, "
                               f"past the end of the file ({len(self._buf)} bytes)")
        return version, tree, data, names

    def _walk(self, node: int, parent: str, depth: int) -> None:
        """List record `node` and, for a directory, its children; each record is visited once, so
        a corrupt tree whose directories share or loop back to records cannot recurse forever."""
        if node in self._seen or depth > MAX_DEPTH:
            raise RccError(f"{self.path}: tree record {node} is reached twice or too deep (a corrupt tree)")
        self._seen.add(node)
        record = self._slice(self._tree + node * self._record, self._record, f"tree record {node}")
        name_offset, flags = struct.unpack(">IH", record[:6])
        path = "" if node == 0 else f"{parent}/{self._name(name_offset)}"
        if not flags & DIRECTORY:
            country, language, data_offset = struct.unpack(">HHI", record[6:14])
            self.entries.setdefault(path, RccEntry(path, flags, data_offset, country, language))
            return
        count, first = struct.unpack(">II", record[6:14])
        for child in range(first, first + count):
            self._walk(child, path, depth + 1)

    def _name(self, offset: int) -> str:
        start = self._names + offset
        (length,) = self._unpack(">H", start, "a name's length")
        raw = self._slice(start + 6, 2 * length, "a name")
        try:
            return raw.decode("utf-16-be")
        except UnicodeDecodeError:
            raise RccError(f"{self.path}: a name at names offset {offset} is not UTF-16") from None

    def _inflate(self, payload: bytes, path: str) -> bytes:
        if len(payload) < 4:
            raise RccError(f"{self.path}: {path}: compressed data shorter than its 4-byte size")
        (expected,) = struct.unpack(">I", payload[:4])
        try:
            out = zlib.decompress(payload[4:])
        except zlib.error as exc:
            raise RccError(f"{self.path}: {path}: zlib data is damaged ({exc})") from None
        if len(out) != expected:
            raise RccError(f"{self.path}: {path}: inflates to {len(out)} bytes, the header says {expected}")
        return out

    def _unpack(self, fmt: str, offset: int, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self._slice(offset, struct.calcsize(fmt), what))

    def _slice(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or offset + size > len(self._buf):
            raise RccError(f"{self.path}: truncated: {what} needs bytes {offset}..{offset + size}, "
                           f"the file has {len(self._buf)}")
        return self._buf[offset : offset + size]
