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

SEASON_START = dt.date(2018, 9, 1)
SEASON_END = dt.date(2019, 11, 30)
SEASON_DAYS = (SEASON_END - SEASON_START).days + 1
BANDS = PASTIS_BANDS
REVISIT_DAYS = 5
BACKGROUND = 0
VOID = 19
#: PASTIS nomenclature, indexed by semantic label.
CLASS_NAMES = (
    "Background", "Meadow", "Soft winter wheat", "Corn", "Winter barley", "Winter rapeseed",
    "Spring barley", "Sunflower", "Grapevine", "Beet", "Winter triticale",
    "Winter durum wheat", "Fruits, vegetables, flowers", "Potatoes", "Leguminous fodder",
    "Soybeans", "Orchard", "Mixed cereal", "Sorghum", "Void label",
)  # fmt: skip
#: Approximate number of PASTIS parcels per class (nomenclature figure of pastis-benchmark):
#: the relative frequency of each crop class among synthetic parcels.
CLASS_WEIGHTS = {
    1: 31292, 2: 8206, 3: 13123, 4: 2766, 5: 1769, 6: 908, 7: 1355, 8: 10640, 9: 871,
    10: 1208, 11: 1704, 12: 2619, 13: 551, 14: 3174, 15: 1212, 16: 2998, 17: 848, 18: 707,
}  # fmt: skip

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
# Clouds are bright and nearly flat, a little brighter in blue and darker in SWIR.
_CLOUD_SHAPE = np.array([1.0, 1.0, 0.98, 0.97, 0.96, 0.95, 0.95, 0.94, 0.75, 0.6], np.float32)
# Shadows keep only diffuse skylight, which is bluer: relative transmission per band.
_SHADOW_SHAPE = np.array([1.5, 1.35, 1.25, 1.1, 1.0, 1.0, 1.0, 1.0, 0.95, 0.9], np.float32)
# Haze: additive path reflectance (x1e4) at unit thickness, falling with wavelength.
_HAZE = np.array([900, 750, 600, 520, 470, 430, 400, 390, 200, 120], np.float32)
# Residual of the atmospheric correction per date: offset sd per band (x1e4).
_ATM_SD = np.array([50, 40, 35, 30, 25, 25, 25, 25, 20, 15], np.float32)

# Sky states recorded per pixel and date in Patch.sky.
CLEAR, CLOUD, SHADOW, HAZE, WISP = 0, 1, 2, 3, 4
_CORR_DAYS = 7.0  # decorrelation time of the cloudy/clear state
_SEASONAL_SWING = 0.12  # at cloud_prob 0.6: winter ~0.72, summer ~0.48
_WINTER_PEAK_DAY = 136  # 2019-01-15
_HAZE_SHARE = 0.3  # of cloudy dates
_OVERCAST_SHARE = 0.2  # of cloud (not haze) dates
_WISP_DATE_SHARE = 0.25  # of clear dates

# Day (since SEASON_START) of month starts, to keep the phenology table readable.
_SEP, _OCT, _NOV, _DEC, _JAN, _FEB, _MAR, _APR, _MAY, _JUN, _JUL, _AUG = (
    0, 30, 61, 91, 122, 153, 181, 212, 242, 273, 303, 334,
)  # fmt: skip
_SEP19, _OCT19, _NOV19 = 365, 395, 426

_SHIFT_CAP = 28.0  # days: sowing/harvest shifts stay within +-4 weeks
_AMP_SD = 0.08  # per-parcel canopy amplitude
_BACKGROUND_SHARE = 0.2  # of Voronoi cells


@dataclass(frozen=True)
class Bump:
    """One rise-and-fall of vegetation fraction (a double logistic), in reference days.

    Attributes:
        start: day of the rise's midpoint; ``end``: of the fall's midpoint.
        amp: height; negative for a dip (mowing, flowering, drought).
        rise, fall: logistic time scales in days.
        prob: share of parcels showing it (a cut, a drought, a vegetable cycle).
        jitter: sd in days of an extra per-parcel shift of this bump alone.
    """

    start: float
    end: float
    amp: float
    rise: float = 8.0
    fall: float = 8.0
    prob: float = 1.0
    jitter: float = 0.0


@dataclass(frozen=True)
class Cover:
    """One land cover: its label, reference vegetation-fraction curve and timing spread.

    Attributes:
        label: PASTIS semantic class (0 for background covers).
        base: vegetation fraction outside the bumps.
        bumps: the curve's bumps, in reference days since SEASON_START.
        sow, harvest: reference days anchoring the season; per parcel they shift
            independently and the curve between them is stretched to follow.
        sow_sd, harvest_sd: sd in days of those per-parcel shifts (capped at 4 weeks).
        base_sd: per-parcel sd of ``base`` (e.g. grassed or bare vine inter-rows).
        kind: ``"crop"``, ``"forest"``, ``"urban"`` or ``"water"``; picks the endmembers.
        annual: sown and harvested in the season (gets cover crops, previous-crop residue).
        weight: relative frequency among background cells (crops use CLASS_WEIGHTS).
    """

    label: int
    base: float
    bumps: tuple[Bump, ...]
    sow: float
    harvest: float
    sow_sd: float = 12.0
    harvest_sd: float = 12.0
    base_sd: float = 0.03
    kind: str = "crop"
    annual: bool = True
    weight: float = 1.0

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.label]


def _winter_cereal(label, sow, tiller_end, green_up, senesce, harvest, autumn, spring, **kw):
    """Winter cereal: autumn emergence, winter tillering plateau, spring growth, ripening."""
    return Cover(
        label, 0.05,
        (Bump(sow + 15, tiller_end, autumn, 10, 8), Bump(green_up, senesce, spring, 12, 8),
         Bump(senesce - 15, harvest, 0.12, 5, 3)),
        sow=sow, harvest=harvest, **kw,
    )  # fmt: skip


def _summer_crop(label, sow, emerge, senesce, harvest, amp, rise=8.0, fall=8.0, dry=0.15, **kw):
    """Spring/summer crop: bare until emergence, one green peak, dry residue until harvest."""
    return Cover(
        label, 0.05,
        (Bump(emerge, senesce, amp, rise, fall), Bump(senesce - 15, harvest, dry, 5, 3)),
        sow=sow, harvest=harvest, **kw,
    )  # fmt: skip


# Timings follow French crop calendars (days since 2018-09-01; see the module docstring).
CROPS = (
    Cover(1, 0.35, (  # Meadow: green all year, mown 1-3 times, browns in dry summers
        Bump(-60, _DEC + 10, 0.2, 10, 20), Bump(_MAR + 5, _NOV19 + 14, 0.45, 15, 20),
        Bump(_MAY + 20, _MAY + 42, -0.35, 2, 8, prob=0.75, jitter=12),
        Bump(_JUL + 5, _JUL + 27, -0.3, 2, 8, prob=0.55, jitter=14),
        Bump(_AUG + 25, _SEP19 + 17, -0.25, 2, 8, prob=0.35, jitter=14),
        Bump(_JUL + 10, _SEP19 + 10, -0.25, 15, 15, prob=0.4, jitter=10)),
        sow=_MAR + 5, harvest=_NOV19 + 14, sow_sd=8, harvest_sd=8, base_sd=0.06, annual=False),
    _winter_cereal(2, _OCT + 24, _JUN + 17, _MAR + 15, _JUN + 12, _JUL + 15, 0.25, 0.62),
    _summer_crop(3, _APR + 23, _MAY + 25, _SEP19 + 15, _OCT19 + 10, 0.85, 9, 10, 0.2,
                 harvest_sd=16),  # Corn (silage in early Sept, grain in October)
    _winter_cereal(4, _OCT + 5, _MAY + 27, _FEB + 27, _MAY + 23, _JUN + 28, 0.32, 0.55),
    Cover(5, 0.05, (  # Winter rapeseed: sown late Aug, green in autumn, yellow flowers in April
        Bump(15, _JUN + 17, 0.55, 7, 8), Bump(_JAN - 2, _FEB + 17, -0.12, 10, 10),
        Bump(_FEB + 22, _JUN + 2, 0.3, 10, 8), Bump(_APR + 8, _MAY + 3, -0.25, 4, 5),
        Bump(_JUN + 2, _JUL + 6, 0.12, 5, 3)),
        sow=0, harvest=_JUL + 6),
    _summer_crop(6, _MAR + 10, _MAR + 30, _JUN + 17, _JUL + 12, 0.8, 8, 7),  # Spring barley
    _summer_crop(7, _APR + 14, _MAY + 9, _AUG + 11, _SEP19 + 20, 0.75, 7, 8),  # Sunflower
    Cover(8, 0.18, (  # Grapevine: rows over bare or grassed inter-rows, leaves Apr-Oct
        Bump(-60, _OCT + 10, 0.25, 10, 12), Bump(_APR + 23, _OCT19 + 5, 0.35, 12, 12),
        Bump(_JUL + 10, _SEP19 + 10, -0.1, 15, 15, prob=0.5, jitter=10)),
        sow=_APR + 23, harvest=_OCT19 + 5, sow_sd=8, harvest_sd=8, base_sd=0.07, annual=False),
    _summer_crop(9, _MAR + 25, _MAY + 1, _OCT19 + 15, _OCT19 + 15, 0.85, 12, 4, 0.0,
                 harvest_sd=18),  # Beet: green until lifted, Sept-Nov
    _winter_cereal(10, _OCT + 15, _JUN + 15, _MAR + 10, _JUN + 10, _JUL + 11, 0.28, 0.6),
    _winter_cereal(11, _OCT + 20, _JUN + 8, _MAR + 10, _JUN + 3, _JUL + 3, 0.22, 0.6),
    Cover(12, 0.08, (  # Fruits, vegetables, flowers: short cycles at any time of year
        Bump(_NOV, _MAR, 0.5, 8, 6, prob=0.25, jitter=20),
        Bump(_APR + 5, _JUN + 15, 0.65, 7, 5, prob=0.6, jitter=25),
        Bump(_JUN + 25, _AUG + 25, 0.65, 7, 5, prob=0.6, jitter=25),
        Bump(_SEP19, _NOV19, 0.5, 7, 5, prob=0.4, jitter=20)),
        sow=_APR, harvest=_SEP19, sow_sd=20, harvest_sd=20),
    _summer_crop(13, _APR + 8, _MAY + 13, _JUL + 28, _AUG + 26, 0.8, 8, 5, 0.1),  # Potatoes
    Cover(14, 0.3, (  # Leguminous fodder (alfalfa, clover): perennial, cut every ~6 weeks
        Bump(-60, _DEC + 10, 0.25, 10, 20), Bump(_MAR, _NOV19 + 14, 0.55, 12, 20),
        Bump(_MAY + 10, _MAY + 30, -0.45, 2, 6, prob=0.9, jitter=12),
        Bump(_JUN + 20, _JUL + 10, -0.45, 2, 6, prob=0.85, jitter=12),
        Bump(_AUG, _AUG + 20, -0.4, 2, 6, prob=0.7, jitter=12),
        Bump(_SEP19 + 15, _OCT19 + 5, -0.35, 2, 6, prob=0.5, jitter=12),
        Bump(_JUL + 10, _SEP19 + 10, -0.2, 15, 15, prob=0.15, jitter=10)),
        sow=_MAR, harvest=_NOV19 + 14, sow_sd=8, harvest_sd=8, base_sd=0.06, annual=False),
    _summer_crop(15, _MAY + 3, _JUN, _SEP19 + 6, _OCT19 - 5, 0.8, 8, 6, 0.12),  # Soybeans
    Cover(16, 0.35, (  # Orchard: trees over grassed inter-rows, leaves Apr-Oct
        Bump(-60, _OCT + 20, 0.3, 10, 15), Bump(_APR + 3, _OCT19 + 15, 0.35, 10, 15),
        Bump(_JUL + 10, _SEP19 + 10, -0.15, 15, 15, prob=0.4, jitter=10)),
        sow=_APR + 3, harvest=_OCT19 + 15, sow_sd=8, harvest_sd=8, base_sd=0.06, annual=False),
    _winter_cereal(17, _OCT + 15, _JUN + 10, _MAR + 8, _JUN + 5, _JUL + 5, 0.25, 0.6,
                   harvest_sd=18),  # Mixed cereal: some cut green for silage in May-June
    _summer_crop(18, _MAY + 8, _JUN + 8, _SEP19 + 20, _OCT19 + 10, 0.75, 9, 10, 0.2),  # Sorghum
)  # fmt: skip
CROP_BY_LABEL = {c.label: c for c in CROPS}
BACKGROUNDS = (
    Cover(BACKGROUND, 0.55, (Bump(-60, _OCT + 25, 0.35, 10, 12),
                             Bump(_APR + 19, _OCT19 + 15, 0.35, 10, 12)),
          sow=_APR + 19, harvest=_OCT19 + 15, sow_sd=5, harvest_sd=5, base_sd=0.05,
          kind="forest", annual=False, weight=0.5),
    Cover(BACKGROUND, 0.1, (Bump(_APR, _OCT19 + 5, 0.08, 10, 10),), sow=_APR,
          harvest=_OCT19 + 5, sow_sd=5, harvest_sd=5, kind="urban", annual=False, weight=0.3),
    Cover(BACKGROUND, 0.0, (), sow=0, harvest=SEASON_DAYS, sow_sd=0, harvest_sd=0, base_sd=0,
          kind="water", annual=False, weight=0.2),
)  # fmt: skip


def vegetation_fraction(cover: Cover, days: np.ndarray) -> np.ndarray:
    """Evaluate a cover's reference vegetation-fraction curve (every bump), clipped to [0, 1].

    Args:
        cover: the land cover.
        days: days since SEASON_START, any shape.

    Returns:
        float64 array shaped like ``days``.
    """
    t = np.asarray(days, dtype=np.float64)
    frac = np.full(t.shape, cover.base)
    for b in cover.bumps:
        frac += _bump(t, b.start, b.end, b.amp, b.rise, b.fall)
    return np.clip(frac, 0.0, 1.0)


def _bump(t: np.ndarray, start: float, end: float, amp: float, rise: float, fall: float):
    return amp * (_sigmoid((t - start) / rise) - _sigmoid((t - end) / fall))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for the large |x| far from a bump's edges.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _shift(rng: np.random.Generator, sd: float) -> float:
    return float(np.clip(rng.normal(0.0, sd), -_SHIFT_CAP, _SHIFT_CAP)) if sd > 0 else 0.0


def _warp(days: np.ndarray, sow: float, harvest: float, a: float, b: float) -> np.ndarray:
    """Reference day of each actual day, for a season moved from (sow, harvest) to
    (sow + a, harvest + b): shifted by ``a`` before sowing, by ``b`` after harvest and
    stretched linearly in between."""
    t = np.asarray(days, dtype=np.float64)
    s1, h1 = sow + a, harvest + b
    inside = sow + (t - s1) * (harvest - sow) / max(h1 - s1, 1.0)
    return np.where(t < s1, t - a, np.where(t > h1, t - b, inside))


def parcel_fraction(
    rng: np.random.Generator,
    cover: Cover,
    days: np.ndarray,
    climate_shift: float = 0.0,
    vigour: float = 1.0,
) -> np.ndarray:
    """Vegetation fraction of one parcel on ``days``: the class curve with the parcel's own
    sowing and harvest dates, canopy amplitude, optional events and management.

    Args:
        rng: random stream.
        cover: the parcel's cover.
        days: acquisition days since SEASON_START, (T,).
        climate_shift: days added to sowing and harvest of every parcel of the patch.
        vigour: canopy amplitude factor shared by the patch.

    Returns:
        float64 (T,) in [0, 1].
    """
    days = np.asarray(days, dtype=np.float64)
    a = _shift(rng, cover.sow_sd) + climate_shift
    b = _shift(rng, cover.harvest_sd) + climate_shift
    tau = _warp(days, cover.sow, cover.harvest, a, b)
    scale = float(np.clip(rng.normal(1.0, _AMP_SD), 0.75, 1.25)) * vigour
    frac = np.full(days.shape, cover.base + rng.normal(0.0, cover.base_sd))
    optional = [k for k, bump in enumerate(cover.bumps) if bump.prob < 1.0]
    keep = {k for k in optional if rng.random() < cover.bumps[k].prob}
    if cover.label == 12 and not keep:  # a vegetable parcel grows at least one cycle
        keep = {optional[int(rng.integers(len(optional)))]}
    for k, bump in enumerate(cover.bumps):
        jitter = rng.normal(0.0, bump.jitter) if bump.jitter else 0.0
        if bump.prob < 1.0 and k not in keep:
            continue
        amp = bump.amp * (scale if bump.amp > 0 else rng.uniform(0.6, 1.2))
        frac += _bump(tau, bump.start + jitter, bump.end + jitter, amp, bump.rise, bump.fall)
    if cover.annual:  # class-independent management around the crop's own season
        s1, h1 = cover.sow + a, cover.harvest + b
        if s1 > _NOV and rng.random() < 0.3:  # previous summer crop, harvested Sept-Oct 2018
            frac += _bump(days, -60, rng.uniform(15, 55), rng.uniform(0.2, 0.6), 8, 4)
        if s1 > _FEB and rng.random() < 0.4:  # winter cover crop, destroyed before sowing
            frac += _bump(days, rng.uniform(20, 60), s1 - rng.uniform(10, 30),
                          rng.uniform(0.15, 0.45), 10, 4)  # fmt: skip
        if h1 < _SEP19 + 15 and rng.random() < 0.45:  # catch crop or weeds after harvest
            frac += _bump(days, h1 + rng.uniform(15, 45), SEASON_DAYS + 60,
                          rng.uniform(0.1, 0.45), 8, 10)  # fmt: skip
    return np.clip(frac, 0.0, 1.0)


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
    # Sentinel-2A+B revisit a tile every 5 days; clouds and tile edges thin that out.
    slots = np.arange(orbit % REVISIT_DAYS, SEASON_DAYS, REVISIT_DAYS)
    if n_dates > len(slots):  # more dates than the revisit allows: any day will do
        slots = np.arange(SEASON_DAYS)
    days = np.sort(rng.choice(slots, size=n_dates, replace=False))
    dates = [int((SEASON_START + dt.timedelta(days=int(d))).strftime("%Y%m%d")) for d in days]

    cells, covers, labels = _parcels(rng, size)
    n_cells = len(covers)
    present = np.bincount(cells.ravel(), minlength=n_cells) > 0
    is_parcel = np.array([c.kind == "crop" for c in covers]) & present
    parcel_index = np.cumsum(is_parcel) * is_parcel  # 1..n for parcels, 0 for background

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
    wet = rng.uniform(0.8, 1.0, (n_dates, 1, 1, 1)).astype(np.float32)
    refl = ground[None] * wet + frac[:, None] * (veg[None] - ground[None] * wet)  # (T,10,H,W)
    del frac
    _mix_borders(rng, refl, cells)
    _resample_like_s2(refl)

    # Residual of the atmospheric correction, per date and band, common to the patch.
    gain = 1.0 + noise * rng.normal(0.0, 0.02, (n_dates, 1, 1, 1))
    offset = noise * rng.standard_normal((n_dates, len(BANDS), 1, 1)) * _ATM_SD[:, None, None]
    refl = refl * gain.astype(np.float32) + offset.astype(np.float32)
    cloudy = cloudy_dates(rng, days, cloud_prob)
    sky = _add_sky(rng, refl, cloudy, noise)
    refl += noise * rng.standard_normal(refl.shape, dtype=np.float32) * (20.0 + 0.015 * refl)
    s2 = np.clip(np.rint(refl), 0, 10000).astype(np.int16)
    del refl

    semantic = labels[cells].astype(np.uint8)
    instance = parcel_index[cells].astype(np.uint8)
    target = np.stack([semantic, instance, semantic])
    parcel_ids = np.where(is_parcel[cells], parcel_index[cells] + id_offset, 0).astype(np.int32)
    return Patch(
        s2=s2,
        target=target,
        parcel_ids=parcel_ids,
        dates=dates,
        n_parcel=int(is_parcel.sum()),
        parcel_cover=float(is_parcel[cells].mean()),
        sky=sky,
        cloudy=cloudy,
    )


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


def cloudy_dates(rng: np.random.Generator, days: np.ndarray, cloud_prob: float) -> np.ndarray:
    """Cloudy-or-hazy state of each date: a two-state Markov chain over the patch's dates.

    The chance of a cloudy date is ``cloud_prob`` on average, more in winter, less in summer;
    the state persists with correlation exp(-gap / 7 days) between consecutive dates.

    Args:
        rng: random stream.
        days: sorted acquisition days since SEASON_START, (T,).
        cloud_prob: stationary share of cloudy dates in [0, 1].

    Returns:
        bool (T,).
    """
    days = np.asarray(days, dtype=np.float64)
    swing = _SEASONAL_SWING * min(cloud_prob, 1.0 - cloud_prob) / 0.4
    swing = min(swing, cloud_prob, 1.0 - cloud_prob)
    p = cloud_prob + swing * np.cos(2 * np.pi * (days - _WINTER_PEAK_DAY) / 365.25)
    gaps = np.diff(days, prepend=days[:1] - 1e9)
    rho = np.exp(-gaps / _CORR_DAYS)
    u = rng.random(len(days))
    state = np.zeros(len(days), dtype=bool)
    prev = 0.0
    for t in range(len(days)):
        state[t] = u[t] < p[t] * (1.0 - rho[t]) + rho[t] * prev
        prev = float(state[t])
    return state


def _add_sky(
    rng: np.random.Generator, refl: np.ndarray, cloudy: np.ndarray, noise: float
) -> np.ndarray:
    """Clouds, shadows, haze and clear-sky wisps blended into ``refl`` in place; returns sky."""
    n_dates, _, h, w = refl.shape
    sky = np.zeros((n_dates, h, w), np.uint8)
    for t in range(n_dates):
        if not cloudy[t]:
            if rng.random() < _WISP_DATE_SHARE:  # undetected sub-pixel cloud: NDVI outliers
                alpha = _cloud_field(rng, (h, w), rng.uniform(0.03, 0.1), rng.uniform(0.8, 1.5))
                alpha *= noise * rng.uniform(0.1, 0.4)
                _blend_cloud(rng, refl[t], alpha)
                sky[t][alpha >= 0.05] = WISP
            continue
        if rng.random() < _HAZE_SHARE:
            _haze(rng, refl[t])
            sky[t] = HAZE
            continue
        overcast = rng.random() < _OVERCAST_SHARE
        if overcast:
            alpha = np.clip(rng.uniform(0.85, 1.0) + 0.05 * smooth_noise(rng, (h, w), 4.0), 0, 1)
            shadow = np.zeros((h, w), np.float32)
        else:
            sigma = rng.uniform(3.0, 16.0)
            alpha = _cloud_field(rng, (h, w), rng.uniform(0.05, 0.8), sigma)
            alpha *= rng.uniform(0.6, 1.0)
            # Shadows fall away from the sun (south-east at 10:30): to the north-west.
            angle = np.deg2rad(rng.uniform(-20, 20) + 135.0)
            dist = rng.uniform(3.0, 30.0)
            dy, dx = round(-dist * np.sin(angle)), round(dist * np.cos(angle))
            shadow = np.roll(alpha / alpha.max().clip(1e-6), (dy, dx), axis=(0, 1))
            shadow = (np.clip(shadow, 0, 1) * (1.0 - alpha)).astype(np.float32)
            keep = np.clip(rng.uniform(0.2, 0.45) * _SHADOW_SHAPE, 0, 0.9)[:, None, None]
            refl[t] *= 1.0 - shadow[None] * (1.0 - keep)
        if rng.random() < 0.5:
            _haze(rng, refl[t], thickness=rng.uniform(0.1, 0.5))
        _blend_cloud(rng, refl[t], alpha)
        sky[t][shadow >= 0.1] = SHADOW
        sky[t][alpha >= 0.1] = CLOUD
    return sky


def _cloud_field(
    rng: np.random.Generator, shape: tuple[int, int], coverage: float, sigma: float
) -> np.ndarray:
    """Opacity in [0, 1] of smooth cloud blobs covering about ``coverage`` of the patch."""
    field = smooth_noise(rng, shape, sigma)
    threshold = np.quantile(field, 1.0 - coverage)
    return np.clip((field - threshold) / 0.6, 0.0, 1.0).astype(np.float32)


def _blend_cloud(rng: np.random.Generator, img: np.ndarray, alpha: np.ndarray) -> None:
    """Blend a bright, nearly flat cloud spectrum into one date (10, H, W) with opacity alpha."""
    h, w = alpha.shape
    level = rng.uniform(2500, 7000) * (1.0 + 0.1 * smooth_noise(rng, (h, w), 4.0))
    cloud = _CLOUD_SHAPE[:, None, None] * level[None]
    img += alpha[None] * (cloud - img)


def _haze(rng: np.random.Generator, img: np.ndarray, thickness: float | None = None) -> None:
    """Thin haze over one date (10, H, W): additive path reflectance, slightly less contrast."""
    h, w = img.shape[-2:]
    tau = rng.uniform(0.15, 1.0) if thickness is None else thickness
    tau_map = tau * np.clip(1.0 + 0.3 * smooth_noise(rng, (h, w), 6.0), 0.3, 1.7)
    img *= 1.0 - 0.15 * tau_map[None]
    img += _HAZE[:, None, None] * tau_map[None]
