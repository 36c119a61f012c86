"""Synthetic PASTIS patches: Voronoi parcels, crop phenology, Sentinel-2 spectra, clouds.

Pure array generation, no I/O: :mod:`pimc.data.synthetic` writes the arrays in the PASTIS
layout. The structure is what makes the downstream tasks meaningful:

* each crop class has its own vegetation-fraction curve over the season (double logistics),
  jittered per parcel, so classes separate on NDVI-like series but not trivially;
* reflectance is a linear mix of a vegetation and a ground spectrum weighted by that fraction,
  so NDVI follows the curve;
* pixels of one parcel share curve and spectra (small texture), parcels differ, so an image
  window around a pixel carries information about the pixel's series;
* some dates are (partly) cloudy, as in real PASTIS, which keeps its cloudy acquisitions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pimc.core.bands import PASTIS_BANDS

SEASON_START = dt.date(2018, 9, 1)
SEASON_END = dt.date(2019, 11, 30)
SEASON_DAYS = (SEASON_END - SEASON_START).days + 1
BANDS = PASTIS_BANDS
REVISIT_DAYS = 5
BACKGROUND = 0
VOID = 19
_NIR = [5, 6, 7]  # B07, B08, B8A: where leaf structure (and so crop type) shows most

# Endmember spectra, surface reflectance x1e4, in BANDS order.
_VEG = np.array([300, 600, 350, 1000, 2600, 3300, 3600, 3800, 1900, 900], np.float32)
_SOIL = np.array([900, 1200, 1500, 1800, 1950, 2050, 2100, 2200, 2900, 2500], np.float32)
_FOREST = np.array([250, 450, 250, 700, 1900, 2500, 2800, 2900, 1300, 600], np.float32)
_LITTER = np.array([500, 700, 800, 1000, 1200, 1300, 1400, 1450, 1600, 1100], np.float32)
_URBAN = np.array([1100, 1200, 1300, 1400, 1500, 1600, 1700, 1750, 2000, 1800], np.float32)
_WATER = np.array([600, 500, 350, 250, 200, 180, 150, 140, 80, 60], np.float32)
# Clouds are bright and nearly flat, a little brighter in blue and darker in SWIR.
_CLOUD_SHAPE = np.array([1.1, 1.07, 1.03, 1.02, 1.0, 1.0, 0.99, 0.98, 0.85, 0.7], np.float32)

# Day (since SEASON_START) of some month starts, to keep the phenology table readable.
_OCT, _NOV, _MAR, _APR, _MAY, _JUN, _JUL, _AUG, _SEP, _OCT19, _NOV19 = (
    30, 61, 181, 212, 242, 273, 303, 334, 365, 395, 426,
)  # fmt: skip


@dataclass(frozen=True)
class Cover:
    """One land cover: its label, vegetation-fraction curve and spectra.

    Attributes:
        label: PASTIS semantic class written to TARGET (0 for background covers).
        base: vegetation fraction outside the bumps.
        bumps: (start, end, amplitude, rise, fall) double logistics, in days since
            SEASON_START; a negative amplitude is a dip (mowing, flowering).
        nir: scale of the vegetation spectrum's NIR bands (broadleaf crops are brighter).
        weight: relative frequency of the cover among parcels (or among background cells).
        kind: ``"crop"``, ``"forest"``, ``"urban"`` or ``"water"``; picks the endmembers.
    """

    label: int
    base: float
    bumps: tuple[tuple[float, float, float, float, float], ...]
    nir: float = 1.0
    weight: float = 1.0
    kind: str = "crop"


# Timings follow French crop calendars: winter cereals emerge in November, green up in March
# and are harvested in July; summer crops emerge in May-June and peak in July-August.
CROPS = (
    Cover(1, 0.35, ((-60, _NOV + 20, 0.3, 10, 15), (_MAR - 5, 440, 0.5, 12, 15),
                    (_MAY + 25, _JUN + 10, -0.35, 3, 6), (_AUG - 5, _AUG + 15, -0.3, 3, 6)),
          nir=1.0, weight=0.24),  # Meadow: green all year, cut twice
    Cover(2, 0.05, ((_NOV, 300, 0.2, 8, 6), (190, 290, 0.7, 10, 7), (_NOV19, 600, 0.15, 8, 10)),
          nir=0.95, weight=0.20),  # Soft winter wheat
    Cover(3, 0.05, ((_JUN - 3, 390, 0.85, 7, 8),), nir=1.05, weight=0.16),  # Corn
    Cover(4, 0.05, ((_NOV - 6, 290, 0.22, 8, 6), (175, 270, 0.65, 9, 6)),
          nir=0.92, weight=0.09),  # Winter barley: like wheat, a few weeks earlier
    Cover(5, 0.05, ((15, 300, 0.45, 6, 6), (165, 280, 0.45, 8, 6), (_APR + 3, 240, -0.2, 4, 4)),
          nir=1.15, weight=0.08),  # Winter rapeseed: green in autumn, yellow flowers in April
    Cover(7, 0.05, ((_MAY + 13, 340, 0.75, 7, 6),), nir=1.12, weight=0.07),  # Sunflower
    Cover(8, 0.2, ((_MAY + 3, _SEP + 25, 0.3, 10, 10),), nir=0.9, weight=0.07),  # Grapevine
    Cover(9, 0.05, ((_MAY + 8, _OCT19 + 15, 0.85, 12, 10),), nir=1.2, weight=0.09),  # Beet
)  # fmt: skip
BACKGROUNDS = (
    Cover(BACKGROUND, 0.55, ((_MAR + 19, _OCT19 + 15, 0.35, 10, 12),), weight=0.5, kind="forest"),
    Cover(BACKGROUND, 0.1, ((_APR, _OCT19 + 5, 0.08, 10, 10),), weight=0.3, kind="urban"),
    Cover(BACKGROUND, 0.0, (), weight=0.2, kind="water"),
)
_BACKGROUND_SHARE = 0.2  # of Voronoi cells
_VOID_PARCEL_SHARE = 0.05  # parcels whose crop is outside the nomenclature (label 19)


def vegetation_fraction(cover: Cover, days: np.ndarray) -> np.ndarray:
    """Evaluate a cover's vegetation-fraction curve, clipped to [0, 1].

    Args:
        cover: the land cover.
        days: days since SEASON_START, any shape.

    Returns:
        float64 array shaped like ``days``.
    """
    t = np.asarray(days, dtype=np.float64)
    frac = np.full(t.shape, cover.base)
    for start, end, amp, rise, fall in cover.bumps:
        frac += amp * (_sigmoid((t - start) / rise) - _sigmoid((t - end) / fall))
    return np.clip(frac, 0.0, 1.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for the large |x| far from a bump's edges.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise (periodic FFT filter), float32."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=shape)
    return (field / (field.std() + 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Patch:
    """Arrays of one synthetic PASTIS patch, ready to save.

    Attributes:
        s2: int16 (T, 10, H, W) surface reflectance x1e4.
        target: uint8 (3, H, W): semantic class, parcel index within the patch, class again.
        parcel_ids: int32 (H, W) dataset-wide parcel ids, 0 outside parcels.
        dates: YYYYMMDD ints, sorted, one per date of ``s2``.
        n_parcel: number of parcels (cells that are not background).
        parcel_cover: fraction of pixels inside parcels.
    """

    s2: np.ndarray
    target: np.ndarray
    parcel_ids: np.ndarray
    dates: list[int]
    n_parcel: int
    parcel_cover: float


def generate_patch(
    rng: np.random.Generator,
    size: int,
    n_dates: int,
    cloud_prob: float,
    id_offset: int,
    orbit: int = 0,
) -> Patch:
    """Generate one patch.

    Args:
        rng: the patch's own generator (so patches do not depend on each other).
        size: H = W in pixels.
        n_dates: T, number of acquisition dates.
        cloud_prob: probability that a date is (partly) cloudy.
        id_offset: added to the patch-local parcel index to make dataset-wide parcel ids.
        orbit: picks the day (modulo the revisit) of the patch's tile's acquisitions.

    Returns:
        The patch's arrays and metadata.
    """
    # Sentinel-2A+B revisit a tile every 5 days; clouds and tile edges thin that out.
    slots = np.arange(orbit % REVISIT_DAYS, SEASON_DAYS, REVISIT_DAYS)
    if n_dates > len(slots):  # more dates than the revisit allows: any day will do
        slots = np.arange(SEASON_DAYS)
    days = np.sort(rng.choice(slots, size=n_dates, replace=False))
    dates = [int((SEASON_START + dt.timedelta(days=int(d))).strftime("%Y%m%d")) for d in days]

    cells, covers, labels = _parcels(rng, size)
    n_cells = len(covers)
    is_parcel = np.array([c.kind == "crop" for c in covers])
    parcel_index = np.cumsum(is_parcel) * is_parcel  # 1..n for parcels, 0 for background

    # Per-cell curve with timing and amplitude jitter: farmers do not sow on the same day.
    shift = rng.uniform(-10.0, 10.0, n_cells)
    amp = rng.uniform(0.85, 1.05, n_cells)
    frac_cell = np.stack(
        [vegetation_fraction(c, days - s) for c, s in zip(covers, shift, strict=True)]
    )
    frac_cell = np.clip(frac_cell * amp[:, None], 0.0, 1.0).astype(np.float32)
    veg_cell, ground_cell = _cell_spectra(rng, covers)

    texture_amp = np.array([{"water": 0.0, "forest": 0.08}.get(c.kind, 0.03) for c in covers])
    frac = frac_cell[cells].transpose(2, 0, 1)  # (T, H, W)
    frac += (texture_amp[cells] * smooth_noise(rng, (size, size), 1.5))[None]
    frac += 0.02 * rng.standard_normal(frac.shape, dtype=np.float32) * (texture_amp[cells] > 0)
    np.clip(frac, 0.0, 1.0, out=frac)

    ground = ground_cell[cells].transpose(2, 0, 1)  # (10, H, W)
    ground *= 1.0 + 0.04 * smooth_noise(rng, (size, size), 1.0)
    veg = veg_cell[cells].transpose(2, 0, 1)
    refl = ground[None] + frac[:, None] * (veg - ground)[None]  # (T, 10, H, W)
    del frac
    # Per-date illumination / atmospheric-correction residual, common to the whole patch.
    refl *= rng.normal(1.0, 0.03, (n_dates, 1, 1, 1)).astype(np.float32)
    _add_clouds(rng, refl, cloud_prob)
    refl += rng.standard_normal(refl.shape, dtype=np.float32) * (25.0 + 0.02 * refl)
    s2 = np.clip(np.rint(refl), 0, 10000).astype(np.int16)
    del refl

    semantic = labels[cells].astype(np.uint8)
    semantic[_borders(cells, is_parcel)] = VOID
    instance = parcel_index[cells].astype(np.uint8)
    target = np.stack([semantic, instance, semantic])
    parcel_ids = np.where(is_parcel[cells], parcel_index[cells] + id_offset, 0).astype(np.int32)
    return Patch(
        s2=s2,
        target=target,
        parcel_ids=parcel_ids,
        dates=dates,
        # Counted from the map: two seeds in one pixel can leave a cell without pixels.
        n_parcel=len(np.unique(parcel_ids[parcel_ids > 0])),
        parcel_cover=float(is_parcel[cells].mean()),
    )


def _parcels(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[Cover], np.ndarray]:
    """Voronoi cells and their covers; returns (cell index map, covers, TARGET labels)."""
    # ~6-15 cells at 32 px; more at larger sizes, capped so parcel indices fit in uint8.
    n_cells = min(250, round(rng.integers(6, 16) * (size / 32) ** 1.5))
    seeds = rng.uniform(0, size, (n_cells, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cells = dist.argmin(axis=-1)

    crop_w = np.array([c.weight for c in CROPS])
    back_w = np.array([c.weight for c in BACKGROUNDS])
    covers: list[Cover] = []
    labels = np.empty(n_cells, dtype=np.int64)
    for k in range(n_cells):
        if rng.random() < _BACKGROUND_SHARE:
            cover = BACKGROUNDS[rng.choice(len(BACKGROUNDS), p=back_w / back_w.sum())]
        else:
            cover = CROPS[rng.choice(len(CROPS), p=crop_w / crop_w.sum())]
        covers.append(cover)
        void = cover.kind == "crop" and rng.random() < _VOID_PARCEL_SHARE
        labels[k] = VOID if void else cover.label
    return cells, covers, labels


def _cell_spectra(rng: np.random.Generator, covers: list[Cover]) -> tuple[np.ndarray, np.ndarray]:
    """Vegetation and ground spectra per cell, (n_cells, 10) float32 each."""
    n = len(covers)
    veg = np.empty((n, len(BANDS)), np.float32)
    ground = np.empty((n, len(BANDS)), np.float32)
    for k, cover in enumerate(covers):
        if cover.kind == "water":
            veg[k] = ground[k] = _WATER * rng.uniform(0.8, 1.3)
            continue
        base_veg = _FOREST if cover.kind == "forest" else _VEG
        veg[k] = base_veg
        veg[k, _NIR] *= cover.nir
        ground[k] = {"forest": _LITTER, "urban": _URBAN}.get(cover.kind, _SOIL)
    # Each field has its own soil brightness and canopy vigour.
    ground *= rng.uniform(0.7, 1.3, (n, 1)).astype(np.float32)
    veg *= rng.normal(1.0, 0.05, (n, 1)).astype(np.float32)
    return veg, ground


def _borders(cells: np.ndarray, is_parcel: np.ndarray) -> np.ndarray:
    """1-px boundary mask: a pixel whose right or lower neighbour is in another cell.

    Boundaries between two background cells are not parcel borders and stay background.
    """
    border = np.zeros(cells.shape, dtype=bool)
    for a, b, sl in (
        (cells[:, :-1], cells[:, 1:], (slice(None), slice(None, -1))),
        (cells[:-1, :], cells[1:, :], (slice(None, -1), slice(None))),
    ):
        border[sl] |= (a != b) & (is_parcel[a] | is_parcel[b])
    return border


def _add_clouds(rng: np.random.Generator, refl: np.ndarray, cloud_prob: float) -> None:
    """Blend smooth cloud blobs (and their shadows) into some dates, in place."""
    n_dates, _, h, w = refl.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = (yy + 0.5) / h, (xx + 0.5) / w
    for t in np.flatnonzero(rng.random(n_dates) < cloud_prob):
        n_blobs = rng.integers(1, 5)
        centres = rng.uniform(-0.2, 1.2, (n_blobs, 2))
        radii = rng.uniform(0.1, 0.5, n_blobs)
        peaks = rng.uniform(0.7, 1.0, n_blobs)
        offset = rng.uniform(-0.15, 0.15, 2)  # shadow falls beside the cloud
        alpha = _blobs(yy, xx, centres, radii, peaks)
        shadow = _blobs(yy, xx, centres + offset, radii, peaks) * (1.0 - alpha)
        brightness = rng.uniform(3000, 8000) * (1.0 + 0.1 * smooth_noise(rng, (h, w), 3.0))
        cloud = _CLOUD_SHAPE[:, None, None] * brightness[None]
        refl[t] *= 1.0 - 0.5 * shadow[None]
        refl[t] += alpha[None] * (cloud - refl[t])
    # Thin haze: a faint veil over the whole patch.
    for t in np.flatnonzero(rng.random(n_dates) < cloud_prob / 2):
        veil = rng.uniform(0.03, 0.15)
        refl[t] += veil * (_CLOUD_SHAPE[:, None, None] * 3000.0 - refl[t])


def _blobs(
    yy: np.ndarray, xx: np.ndarray, centres: np.ndarray, radii: np.ndarray, peaks: np.ndarray
) -> np.ndarray:
    """Opacity of overlapping Gaussian blobs, sharpened so clouds have a solid core."""
    clear = np.ones_like(yy)
    for (cy, cx), r, p in zip(centres, radii, peaks, strict=True):
        clear *= 1.0 - p * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * r * r))
    return np.clip(1.3 * (1.0 - clear), 0.0, 1.0).astype(np.float32)
