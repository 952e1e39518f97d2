"""The evaluation room: zero-shot classification and retrieval over evaluation sets.

Set readers, class texts and metrics are torch-free (numpy and Pillow); only the modules that run a
model import torch, so `kgclip export-eval` and `kgclip evalset` work on a harvest-only install.
"""
