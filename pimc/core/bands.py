"""Sentinel-2 and PASTIS facts, stated once: band orders of the datasets, band-name spelling,
and the PASTIS patch geometry the config is checked against (no torch import here)."""

from __future__ import annotations

import re

#: Band order of the PASTIS ``S2_*.npy`` patches (axis 1 of a ``(T, 10, H, W)`` array); also
#: the order the image encoder sees for every dataset, so one encoder serves PASTIS and EuroSAT.
PASTIS_BANDS: tuple[str, ...] = (
    "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",
)  # fmt: skip

#: PASTIS: semantic classes 0..19 (0 background, 19 void), 128 x 128 px patches, 38-61 dates.
PASTIS_CLASS_COUNT = 20
PASTIS_SIDE = 128
PASTIS_MIN_DATES = 38
PASTIS_MAX_DATES = 61

#: Band order of the EuroSAT multispectral GeoTIFFs: B01..B12 (with B10), then B8A last.
EUROSAT_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)  # fmt: skip


def canonical_band(name: str) -> str:
    """Normalise a band name: upper case, zero-padded number (``"b8"`` -> ``"B08"``).

    ``"b8"``, ``"B8"`` and ``"B08"`` name the same Sentinel-2 band; ``B8A`` keeps its letter.
    """
    band = str(name).strip().upper()
    match = re.fullmatch(r"B(\d)", band)
    return f"B0{match.group(1)}" if match else band
