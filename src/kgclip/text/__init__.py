"""Texts derived from entities: natural types, attributes, and search queries."""
