"""One spelling per licence, whatever the source called it.

Backends name the same licence differently: Openverse `BY-4.0`, GBIF `CC_BY_4_0` or a URL,
Wikimedia Commons `CC BY-SA 4.0`, iNaturalist `CC-BY-NC`, Debian `public-domain`. `normalise`
maps them to SPDX-style identifiers (`CC-BY-4.0`, `CC-BY-SA-4.0`, `CC0-1.0`, `PDM`), keeps what it
does not recognise as given, and says `unknown` when the source gave nothing. `family` drops the
version (`cc-by-sa`), which is what a licence filter usually means.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

UNKNOWN = "unknown"
_CC = re.compile(r"^(?:cc[-\s_]*)?(by(?:[-\s_]*nc)?(?:[-\s_]*(?:sa|nd))?)(?:[-\s_]*(\d)(?:[._\s-]*(\d))?)?$")
_CC_URL = re.compile(r"creativecommons\.org/licenses/([a-z-]+)/(\d\.\d)")
_ZERO = re.compile(r"^(?:cc[-\s_]*)?(?:zero|0)(?:[-\s_]*1[._]?0)?$|creativecommons\.org/publicdomain/zero")
_PUBLIC = re.compile(r"^(?:pdm|pd|public[-\s_]*domain(?:[-\s_]*mark)?|no known copyright restrictions)$")
_PUBLIC_URL = re.compile(r"creativecommons\.org/publicdomain/mark")


def normalise(raw: str | None) -> str:
    if raw is None or not raw.strip() or raw.strip().lower() in ("none", "null", "unknown"):
        return UNKNOWN
    text = raw.strip().lower()
    if _ZERO.search(text):
        return "CC0-1.0"
    if _PUBLIC.match(text) or _PUBLIC_URL.search(text):
        return "PDM"
    url = _CC_URL.search(text)
    if url:
        return f"CC-{url.group(1).upper()}-{url.group(2)}"
    cc = _CC.match(text)
    if cc:
        code = re.sub(r"[-\s_]+", "-", cc.group(1)).upper()
        version = f"-{cc.group(2)}.{cc.group(3) or 0}" if cc.group(2) else ""
        return f"CC-{code}{version}"
    return raw.strip()


def family(licence: str) -> str:
    """`CC-BY-SA-4.0` → `cc-by-sa`; `CC0-1.0` → `cc0`; `PDM` → `pdm`; others lower-cased."""
    lowered = licence.lower()
    if lowered.startswith("cc0"):
        return "cc0"
    return re.sub(r"-\d(\.\d)?$", "", lowered)


def allowed(licence: str, accepted: Sequence[str]) -> bool:
    """Whether a normalised licence passes a filter of families or exact identifiers."""
    if not accepted:
        return True
    wanted = {a.lower() for a in accepted}
    return family(licence) in wanted or licence.lower() in wanted
