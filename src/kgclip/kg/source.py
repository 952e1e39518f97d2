"""What every knowledge-graph source hands to the entities stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kgclip.tables import Entity, Rejected


@dataclass
class SourceResult:
    entities: list[Entity]
    rejects: list[Rejected]
    stats: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
