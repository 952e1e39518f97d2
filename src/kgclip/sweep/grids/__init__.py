"""Bundled sweep files (`kgclip sweep NAME`)."""
