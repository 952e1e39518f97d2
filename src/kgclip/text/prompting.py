"""Prompt templates (package data in text/prompts/) and the entity line every prompt uses."""

from __future__ import annotations

from importlib import resources

from kgclip.tables import Entity

PROMPTS = "kgclip.text.prompts"


def prompt(name: str) -> str:
    return (resources.files(PROMPTS) / name).read_text(encoding="utf-8")


def entity_line(entity: Entity) -> str:
    """`label (description)`, as the method writes an entity in its prompts."""
    return f"{entity.name} ({entity.description})" if entity.description else entity.name
