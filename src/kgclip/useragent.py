"""The User-Agent every outside request carries: who is asking and how to reach them.

Wikimedia blocks generic library agents, and other APIs ask for the same courtesy, so every
client (SPARQL, search backends, later the image fetcher) uses this one form:
`client/version (project URL; contact) library/version`.
"""

from __future__ import annotations

from importlib.metadata import version

from kgclip import __version__

PROJECT_URL = "https://github.com/kgclip/kgclip"


def user_agent(contact: str, library: str = f"httpx/{version('httpx')}") -> str:
    return f"kgclip/{__version__} ({PROJECT_URL}; {contact}) {library}"
