"""Curation: merging duplicates and writing the final WebDataset shards."""
