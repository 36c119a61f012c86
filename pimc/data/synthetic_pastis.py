"""Synthetic PASTIS patches calibrated to real Sentinel-2 statistics over French farmland.

Pure array generation, no I/O: :mod:`pimc.data.synthetic` writes the arrays in the PASTIS
layout. The aim is a benchmark about as hard as the real data, so nothing below is tuned to
make any method win; each ingredient follows a published statistic (sources at the end).

What a patch models
-------------------

**Parcels and labels.** Voronoi cells stand for fields (about 1-3 ha at 32 px, about PASTIS's
~50 parcels per 128 px patch at full size); 20 % of cells are non-agricultural background
(forest, urban, water; class 0). Crop cells draw one of the **18 PASTIS classes** with
PASTIS's imbalance (:data:`CLASS_WEIGHTS`: meadow ~36 % of parcels, then corn, grapevine and
soft wheat, a long tail down to potatoes and sorghum below 1 %). Cell seeds are also drawn in a
margin around the patch: a parcel whose seed lies outside the patch is *mostly outside its
patch* and gets the **void label 19**, which is what void means in PASTIS (about 30 % of its
parcels; ~28 % here). As in PASTIS's TARGET files, every pixel of a parcel, border pixels
included, carries that parcel's class in channel 0; ``ParcelIDs`` holds a dataset-wide id
for every parcel pixel (void parcels included) and 0 elsewhere.

**Phenology.** Each class has a reference vegetation-fraction curve (sums of double logistics,
days since 2018-09-01) following French crop calendars, with the **confusable groups** real
data has: the winter cereals (soft wheat, durum wheat, triticale, winter barley, mixed cereal)
differ by one to three weeks in sowing and harvest, i.e. by less than farmers differ from each
other; meadow and leguminous fodder are both perennial, green all year and mown several times;
corn, sorghum and soybean are all sown in May and peak in July-August. Per parcel:

* sowing and harvest shift **independently** (sd 12 days, capped at +-4 weeks), and the season
  in between is stretched or squeezed, so season length varies;
* the canopy amplitude varies (sd 8 %): with the random spectra below, the within-class
  **peak NDVI has sd ~0.05** (range ~+-0.1) around 0.8-0.85 for field crops, ~0.78 for
  meadow, ~0.7 for orchards and ~0.55-0.6 for vineyards;
* optional events: mowing dates (meadow, fodder: each cut present with some probability and
  moved by +-3 weeks), summer drought browning, vegetable cycles at random times;
* class-independent management: a previous summer crop still standing in Sept-Oct 2018,
  a winter cover crop before spring sowing, a catch crop or weeds after harvest (French
  nitrate rules make autumn cover crops common);
* the whole patch shares a regional climate shift (sd 7 days) and a vigour factor.

**Spectra.** Reflectance is a linear mix of a canopy and a soil (or litter, urban, water)
spectrum weighted by the vegetation fraction. There is **no per-class spectral factor**:
soil brightness and colour, canopy brightness and NIR plateau vary per parcel at random,
independently of the class, and soil darkens on wet dates (per date, whole patch).
Fields have static within-field texture.

**Mixed pixels.** Each pixel on a cell boundary mixes its spectrum with a neighbouring cell's
(weight uniform in [0, 0.5]: the boundary crosses the 10 m pixel somewhere); then a mild
point-spread blur is applied and the 20 m bands (B05-B07, B8A, B11, B12) are averaged over
2x2 blocks, as they are before PASTIS resamples them to 10 m.

**Atmosphere and noise.** Per date a patch-wide residual of the atmospheric correction
(gain sd 2 %, per-band offsets sd 15-50 x1e-4, strongest in blue) and per pixel sensor
noise (20 + 1.5 % of the signal) give a **clear-sky NDVI noise sd of ~0.023** (robust sd;
0.034 plain). A quarter of clear dates carry small undetected cloud wisps (3-10 % of the
patch, opacity up to 0.4): **~1 % of clear-sky NDVI values are off by 0.1-0.5**.

**Clouds.** Whether a date is cloudy or hazy follows a **two-state Markov chain over the
patch's dates**: its stationary share is ``cloud_prob`` (+-12 % seasonal swing at 0.6: ~0.71
in winter, ~0.49 in summer) and its persistence decays as exp(-gap / 7 days), so cloudy dates
come in runs (at 0.6: lag-1 correlation ~0.37, mean run ~3.7 dates). A cloudy date is either
(70 %) thick clouds - overcast (20 %: THEIA produces no L2A for nearly fully clouded tiles, so
fully overcast patches are a minority of the kept dates) or smooth blobs covering 5-80 % of
the patch, with **dark shadows** displaced north-westwards from the clouds (the sun is in the
south-east at Sentinel-2's 10:30 overpass) - or (30 %) haze: a thin additive brightening,
strongest in blue, over the whole patch; half of the cloud dates carry some haze too. At
``cloud_prob`` 0.6 about 45-50 % of (pixel, date) observations lie under cloud, shadow or haze.
:class:`Patch` keeps the true sky state of every pixel and date.

Sources (approximate statistics, rounded):

* PASTIS: Sainte Fare Garnot & Landrieu, "Panoptic segmentation of satellite image time series
  with convolutional temporal attention networks", ICCV 2021 (arXiv:2107.07933), and the
  pastis-benchmark README/nomenclature figure: 2,433 patches of 128x128 px, 124,422 parcels,
  18 crop classes, 38-61 acquisitions Sept 2018 - Nov 2019 from THEIA L2A (MAJA), cloudy
  dates kept, void = parcels mostly outside their patch; parcel counts per class (meadow
  ~31 k, corn ~13 k, grapevine ~11 k, soft wheat ~8 k, ..., potatoes ~0.6 k) set
  :data:`CLASS_WEIGHTS`.
* Cloudiness: Wilson & Jetz, "Remotely sensed high-resolution global cloud dynamics", PLoS
  Biology 2016 (MODIS cloud frequency ~55-75 % over northern and western France, less in the
  south-east, winter cloudier than summer); Sudmanns et al., "Assessing global Sentinel-2
  coverage dynamics and data availability", Int. J. Digital Earth 2020 (most Sentinel-2
  acquisitions over western Europe are partly cloudy). Synoptic weather systems persist for
  several days, hence the ~1 week decorrelation.
* Radiometry: Gascon et al., "Copernicus Sentinel-2A calibration and products validation
  status", Remote Sensing 2017 (radiometric uncertainty < 5 %, SNR > 100, MTF at Nyquist
  0.15-0.3); Doxani et al., "Atmospheric correction inter-comparison exercise", Remote
  Sensing 2018 (L2A surface reflectance errors ~0.005-0.01, largest in blue).
* Crop calendars and NDVI ranges: Veloso et al., "Understanding the temporal behavior of crops
  using Sentinel-1 and Sentinel-2-like data for agricultural applications", Remote Sensing of
  Environment 2017 (south-west France: wheat, rapeseed, maize, sunflower, soybean profiles,
  peak NDVI 0.8-0.9, bare soil 0.1-0.2) and ARVALIS/Agreste sowing and harvest windows of
  4-6 weeks per crop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from pimc.core.bands import PASTIS_BANDS
from pimc.data.synthetic_crops import (
    BACKGROUND,
    BACKGROUNDS,
    CLASS_NAMES,
    CLASS_WEIGHTS,
    CROP_BY_LABEL,
    CROPS,
    SEASON_DAYS,
    SEASON_END,
    SEASON_START,
    VOID,
    Bump,
    Cover,
    parcel_fraction,
    vegetation_fraction,
)
from pimc.data.synthetic_sky import (
    CLEAR,
    CLOUD,
    HAZE,
    SHADOW,
    WISP,
    add_sky,
    cloudy_dates,
    smooth_noise,
)

__all__ = ["BANDS", "REVISIT_DAYS", "Patch", "generate_patch"]

BANDS = PASTIS_BANDS
REVISIT_DAYS = 5

_10M = [0, 1, 2, 6]  # B02, B03, B04, B08
_20M = [3, 4, 5, 7, 8, 9]  # B05, B06, B07, B8A, B11, B12: 20 m bands resampled to 10 m
_NIR_PLATEAU = [4, 5, 6, 7]  # B06, B07, B08, B8A: where canopy structure changes brightness

# Endmember spectra, surface reflectance x1e4, in BANDS order.
_VEG = np.array([250, 600, 220, 1000, 3000, 3900, 4200, 4300, 2000, 900], np.float32)
_SOIL = np.array([900, 1200, 1500, 1800, 1950, 2050, 2100, 2200, 2900, 2500], np.float32)
_FOREST = np.array([250, 450, 230, 700, 1900, 2500, 2800, 2900, 1300, 600], np.float32)
_LITTER = np.array([500, 700, 800, 1000, 1200, 1300, 1400, 1450, 1600, 1100], np.float32)
_URBAN = np.array([1100, 1200, 1300, 1400, 1500, 1600, 1700, 1750, 2000, 1800], np.float32)
_WATER = np.array([600, 500, 350, 250, 200, 180, 150, 140, 80, 60], np.float32)
# Residual of the atmospheric correction per date: offset sd per band (x1e4).
_ATM_SD = np.array([50, 40, 35, 30, 25, 25, 25, 25, 20, 15], np.float32)

_BACKGROUND_SHARE = 0.2  # of Voronoi cells


@dataclass(frozen=True)
class Patch:
    """Arrays of one synthetic PASTIS patch, ready to save.

    Attributes:
        s2: int16 (T, 10, H, W) surface reflectance x1e4.
        target: uint8 (3, H, W): semantic class, parcel index within the patch, class again.
        parcel_ids: int32 (H, W) dataset-wide parcel ids, 0 outside parcels.
        dates: YYYYMMDD ints, sorted, one per date of ``s2``.
        n_parcel: number of parcels (cells that are not background) with pixels in the patch.
        parcel_cover: fraction of pixels inside parcels.
        sky: uint8 (T, H, W) true sky state: CLEAR, CLOUD, SHADOW, HAZE or WISP (an undetected
            cloud wisp on a clear date).
        cloudy: bool (T,): the date is cloudy or hazy (the Markov chain's state).
    """

    s2: np.ndarray
    target: np.ndarray
    parcel_ids: np.ndarray
    dates: list[int]
    n_parcel: int
    parcel_cover: float
    sky: np.ndarray
    cloudy: np.ndarray


def generate_patch(
    rng: np.random.Generator,
    size: int,
    n_dates: int,
    cloud_prob: float,
    id_offset: int,
    orbit: int = 0,
    noise: float = 1.0,
) -> Patch:
    """Generate one patch.

    Args:
        rng: the patch's own generator (so patches do not depend on each other).
        size: H = W in pixels.
        n_dates: T, number of acquisition dates.
        cloud_prob: share of dates that are cloudy or hazy (stationary share of the chain).
        id_offset: added to the patch-local parcel index to make dataset-wide parcel ids.
        orbit: picks the day (modulo the revisit) of the patch's tile's acquisitions.
        noise: scale of the atmospheric residual, sensor noise and cloud wisps (0 gives the
            noise-free surface under the same clouds; random draws are the same either way).

    Returns:
        The patch's arrays and metadata.
    """
    days = _acquisition_days(rng, n_dates, orbit)
    dates = [int((SEASON_START + dt.timedelta(days=int(d))).strftime("%Y%m%d")) for d in days]
    cells, covers, labels = _parcels(rng, size)
    present = np.bincount(cells.ravel(), minlength=len(covers)) > 0
    is_parcel = np.array([c.kind == "crop" for c in covers]) & present
    parcel_index = np.cumsum(is_parcel) * is_parcel  # 1..n for parcels, 0 for background
    refl = _surface(rng, cells, covers, days)
    _mix_borders(rng, refl, cells)
    _resample_like_s2(refl)
    s2, sky, cloudy = _observe(rng, refl, days, cloud_prob, noise)
    semantic = labels[cells].astype(np.uint8)
    instance = parcel_index[cells].astype(np.uint8)
    parcel_ids = np.where(is_parcel[cells], parcel_index[cells] + id_offset, 0).astype(np.int32)
    return Patch(
        s2=s2,
        target=np.stack([semantic, instance, semantic]),
        parcel_ids=parcel_ids,
        dates=dates,
        n_parcel=int(is_parcel.sum()),
        parcel_cover=float(is_parcel[cells].mean()),
        sky=sky,
        cloudy=cloudy,
    )


def _acquisition_days(rng: np.random.Generator, n_dates: int, orbit: int) -> np.ndarray:
    """Sorted acquisition days since SEASON_START, on the tile's revisit slots where possible."""
    # Sentinel-2A+B revisit a tile every 5 days; clouds and tile edges thin that out.
    slots = np.arange(orbit % REVISIT_DAYS, SEASON_DAYS, REVISIT_DAYS)
    if n_dates > len(slots):  # more dates than the revisit allows: any day will do
        slots = np.arange(SEASON_DAYS)
    return np.sort(rng.choice(slots, size=n_dates, replace=False))


def _surface(
    rng: np.random.Generator, cells: np.ndarray, covers: list[Cover], days: np.ndarray
) -> np.ndarray:
    """Clear-sky surface reflectance (T, 10, H, W) float32: canopy over ground per pixel."""
    size = cells.shape[0]
    climate, vigour = rng.normal(0.0, 7.0), float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
    frac_cell = np.stack([parcel_fraction(rng, c, days, climate, vigour) for c in covers])
    veg_cell, ground_cell = _cell_spectra(rng, covers)

    texture_amp = np.array([{"water": 0.0, "forest": 0.08}.get(c.kind, 0.04) for c in covers])
    frac = frac_cell.astype(np.float32)[cells].transpose(2, 0, 1)  # (T, H, W)
    frac += (texture_amp[cells] * smooth_noise(rng, (size, size), 1.5))[None]
    np.clip(frac, 0.0, 1.0, out=frac)

    ground = ground_cell[cells].transpose(2, 0, 1)  # (10, H, W)
    ground *= 1.0 + 0.04 * smooth_noise(rng, (size, size), 1.0)
    veg = veg_cell[cells].transpose(2, 0, 1)
    # Wet soil after rain is darker: one factor per date for the whole patch.
    wet = rng.uniform(0.8, 1.0, (len(days), 1, 1, 1)).astype(np.float32)
    return ground[None] * wet + frac[:, None] * (veg[None] - ground[None] * wet)  # (T,10,H,W)


def _observe(
    rng: np.random.Generator, refl: np.ndarray, days: np.ndarray, cloud_prob: float, noise: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atmospheric residual, sky and sensor noise over ``refl`` (modified in place).

    Returns:
        (s2, sky, cloudy): the int16 reflectance, the sky state and the cloudy dates.
    """
    n_dates = len(days)
    # Residual of the atmospheric correction, per date and band, common to the patch.
    gain = 1.0 + noise * rng.normal(0.0, 0.02, (n_dates, 1, 1, 1))
    offset = noise * rng.standard_normal((n_dates, len(BANDS), 1, 1)) * _ATM_SD[:, None, None]
    refl *= gain.astype(np.float32)  # in place: same float32 operations, no copy
    refl += offset.astype(np.float32)
    cloudy = cloudy_dates(rng, days, cloud_prob)
    sky = add_sky(rng, refl, cloudy, noise)
    refl += noise * rng.standard_normal(refl.shape, dtype=np.float32) * (20.0 + 0.015 * refl)
    s2 = np.clip(np.rint(refl), 0, 10000).astype(np.int16)
    return s2, sky, cloudy


def _parcels(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[Cover], np.ndarray]:
    """Voronoi cells and their covers; returns (cell index map, covers, TARGET labels).

    Seeds fall inside the patch and, at the same density, in a margin of 10 % of the patch
    around it; crop cells seeded in the margin are parcels mostly outside the patch: void.
    """
    # ~6-15 cells seeded inside at 32 px, ~50-120 at 128 px (PASTIS: ~50 parcels per patch).
    n_in = round(rng.integers(6, 16) * (size / 32) ** 1.5)
    margin = 0.1 * size
    n_out = round(n_in * ((size + 2 * margin) ** 2 - size**2) / size**2)
    inner = rng.uniform(0, size, (n_in, 2))
    ring = rng.uniform(-margin, size + margin, (4 * n_out + 8, 2))
    ring = ring[((ring < 0) | (ring >= size)).any(axis=1)][:n_out]
    seeds = np.concatenate([inner, ring])
    outside = np.arange(len(seeds)) >= n_in
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cells = dist.argmin(axis=-1)
    del dist

    crop_labels = np.array(sorted(CLASS_WEIGHTS))
    crop_p = np.array([CLASS_WEIGHTS[k] for k in crop_labels], np.float64)
    back_p = np.array([c.weight for c in BACKGROUNDS])
    covers: list[Cover] = []
    labels = np.empty(len(seeds), dtype=np.int64)
    for k in range(len(seeds)):
        if rng.random() < _BACKGROUND_SHARE:
            cover = BACKGROUNDS[rng.choice(len(BACKGROUNDS), p=back_p / back_p.sum())]
        else:
            cover = CROP_BY_LABEL[int(rng.choice(crop_labels, p=crop_p / crop_p.sum()))]
        covers.append(cover)
        labels[k] = VOID if cover.kind == "crop" and outside[k] else cover.label
    return cells, covers, labels


def _cell_spectra(rng: np.random.Generator, covers: list[Cover]) -> tuple[np.ndarray, np.ndarray]:
    """Canopy and ground spectra per cell, (n_cells, 10) float32 each; class-independent."""
    n = len(covers)
    veg = np.empty((n, len(BANDS)), np.float32)
    ground = np.empty((n, len(BANDS)), np.float32)
    for k, cover in enumerate(covers):
        if cover.kind == "water":
            veg[k] = ground[k] = _WATER * rng.uniform(0.8, 1.3)
            continue
        veg[k] = _FOREST if cover.kind == "forest" else _VEG
        ground[k] = {"forest": _LITTER, "urban": _URBAN}.get(cover.kind, _SOIL)
    # Soil brightness and colour (iron oxides, moisture, organic matter) vary per field...
    ground *= np.clip(rng.lognormal(0.0, 0.2, (n, 1)), 0.6, 1.5).astype(np.float32)
    ground[:, :3] *= rng.normal(1.0, 0.05, (n, 1)).astype(np.float32)
    ground[:, 8:] *= rng.normal(1.0, 0.05, (n, 1)).astype(np.float32)
    # ... and so do canopy brightness and its NIR plateau (leaf structure, leaf angles).
    veg *= rng.normal(1.0, 0.05, (n, 1)).astype(np.float32)
    veg[:, _NIR_PLATEAU] *= rng.normal(1.0, 0.05, (n, 1)).astype(np.float32)
    return veg, ground


def _mix_borders(rng: np.random.Generator, refl: np.ndarray, cells: np.ndarray) -> None:
    """Mix each boundary pixel with a 4-neighbour of another cell (weight U(0, 0.5)), in place."""
    h, w = cells.shape
    rows, cols = np.mgrid[0:h, 0:w]
    nb_r, nb_c = np.full((h, w), -1), np.full((h, w), -1)
    for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        r2, c2 = np.clip(rows + dr, 0, h - 1), np.clip(cols + dc, 0, w - 1)
        hit = (nb_r < 0) & (cells[r2, c2] != cells)
        nb_r[hit], nb_c[hit] = r2[hit], c2[hit]
    br, bc = np.nonzero(nb_r >= 0)
    weight = rng.uniform(0.0, 0.5, len(br)).astype(np.float32)
    own, other = refl[:, :, br, bc], refl[:, :, nb_r[br, bc], nb_c[br, bc]]
    refl[:, :, br, bc] = own + weight * (other - own)


def _resample_like_s2(refl: np.ndarray) -> None:
    """Point-spread blur, and 20 m bands averaged over 2x2 blocks then upsampled, in place."""
    h, w = refl.shape[-2:]
    if h >= 2 and w >= 2:
        sub = refl[:, _20M, : h - h % 2, : w - w % 2]
        t, b = sub.shape[:2]
        block = sub.reshape(t, b, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
        refl[:, _20M, : h - h % 2, : w - w % 2] = block.repeat(2, axis=2).repeat(2, axis=3)
    pad = np.pad(refl, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    around = 0.25 * (pad[..., :-2, 1:-1] + pad[..., 2:, 1:-1] + pad[..., 1:-1, :-2]
                     + pad[..., 1:-1, 2:])  # fmt: skip
    beta = np.full((1, len(BANDS), 1, 1), 0.3, np.float32)
    beta[:, _20M] = 0.5
    refl += beta * (around - refl)
