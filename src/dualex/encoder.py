"""DualEncoder: two towers and how their embeddings are compared (defined with the Tower it
holds, in :mod:`dualex.towers.base`, so that the family modules need not import this module)."""

from dualex.towers.base import DualEncoder, LogitScale, read_scale

__all__ = ["DualEncoder", "LogitScale", "read_scale"]
