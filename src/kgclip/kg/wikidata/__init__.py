"""Wikidata as an entity source: the JSON dump (streamed) and SPARQL endpoints."""
