"""Datasets with grounded captions: one common sample type for every source."""

from dualex.data.types import Box, ImageRef, Mention, Negative, Sample

__all__ = ["Box", "ImageRef", "Mention", "Negative", "Sample"]
