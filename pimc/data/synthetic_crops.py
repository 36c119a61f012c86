"""Land covers and phenology of the synthetic PASTIS patches: class names and weights, the
reference vegetation-fraction curves per class and their per-parcel variation.

See :mod:`pimc.data.synthetic_pastis` for what is modelled and the sources of the statistics.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from pimc.data.pastis import PASTIS

SEASON_START = dt.date(2018, 9, 1)
SEASON_END = dt.date(2019, 11, 30)
SEASON_DAYS = (SEASON_END - SEASON_START).days + 1
BACKGROUND = PASTIS.background_index
VOID = PASTIS.void_index
CLASS_NAMES = PASTIS.classes  # the PASTIS nomenclature, indexed by semantic label
#: Approximate number of PASTIS parcels per class (nomenclature figure of pastis-benchmark):
#: the relative frequency of each crop class among synthetic parcels.
CLASS_WEIGHTS = {
    1: 31292, 2: 8206, 3: 13123, 4: 2766, 5: 1769, 6: 908, 7: 1355, 8: 10640, 9: 871,
    10: 1208, 11: 1704, 12: 2619, 13: 551, 14: 3174, 15: 1212, 16: 2998, 17: 848, 18: 707,
}  # fmt: skip


# Day (since SEASON_START) of month starts, to keep the phenology table readable.
_SEP, _OCT, _NOV, _DEC, _JAN, _FEB, _MAR, _APR, _MAY, _JUN, _JUL, _AUG = (
    0, 30, 61, 91, 122, 153, 181, 212, 242, 273, 303, 334,
)  # fmt: skip
_SEP19, _OCT19, _NOV19 = 365, 395, 426

_SHIFT_CAP = 28.0  # days: sowing/harvest shifts stay within +-4 weeks
_AMP_SD = 0.08  # per-parcel canopy amplitude


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
