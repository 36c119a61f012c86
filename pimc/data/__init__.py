"""Datasets in their real on-disk layouts, downloads, and the embedded synthetic data."""

from pimc.data.eurosat import EuroSAT
from pimc.data.pastis import PASTIS

__all__ = ["EuroSAT", "PASTIS"]
