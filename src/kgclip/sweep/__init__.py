"""`kgclip sweep`: a grid of training runs and their evaluations, resumable (docs/sweep.md)."""
