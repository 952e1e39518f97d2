"""Texts derived from entities: natural types, (later) attributes, and search queries."""
