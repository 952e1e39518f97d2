"""kgclip: harvest image-text datasets for CLIP training from knowledge graphs."""

__version__ = "0.1.0"
