"""Synthetic EuroSAT-MS tiles: class-specific spectra and textures, 13 TOA bands.

Pure array generation, no I/O: :mod:`pimc.data.synthetic` writes the tiles as GeoTIFFs in
EuroSAT's zip. Each class is a recipe of surface endmembers laid out with its own texture
(field stripes, tree rows, roof grain, a river or a road across land...), so both the mean
spectrum and the spatial pattern carry the class, while per-tile jitter (brightness, aerosol,
mixing fractions, background covers) keeps classes from being trivially separable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pimc.core.bands import EUROSAT_BANDS
from pimc.data.synthetic_sky import smooth_noise

CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)  # fmt: skip
BANDS = EUROSAT_BANDS
TILE = 64

# Surface endmembers (reflectance x1e4) in PASTIS order B02 B03 B04 B05 B06 B07 B08 B8A B11 B12;
# _to_toa turns them into EuroSAT's 13 top-of-atmosphere bands.
_E = {
    "crop": [300, 600, 350, 1000, 2600, 3300, 3600, 3800, 1900, 900],
    "grass": [350, 650, 450, 1100, 2500, 3000, 3200, 3350, 2200, 1100],
    "forest": [250, 450, 250, 700, 1900, 2500, 2800, 2900, 1300, 600],
    "orchard": [280, 550, 320, 900, 2300, 2900, 3200, 3350, 1700, 800],
    "dry": [600, 850, 1000, 1400, 1900, 2200, 2400, 2500, 3000, 2200],
    "soil": [900, 1200, 1500, 1800, 1950, 2050, 2100, 2200, 2900, 2500],
    "litter": [500, 700, 800, 1000, 1200, 1300, 1400, 1450, 1600, 1100],
    "concrete": [1300, 1400, 1500, 1600, 1700, 1800, 1850, 1900, 2200, 2000],
    "red_roof": [800, 900, 1400, 1600, 1700, 1800, 1850, 1900, 2300, 2000],
    "dark_roof": [500, 550, 600, 650, 700, 750, 800, 820, 900, 850],
    "asphalt": [700, 750, 800, 850, 900, 950, 1000, 1050, 1300, 1200],
    "river": [700, 700, 600, 450, 350, 300, 250, 240, 120, 80],
    "sea": [550, 450, 300, 200, 150, 130, 110, 100, 50, 40],
}
E = {name: np.asarray(v, np.float32)[:, None, None] for name, v in _E.items()}
# Path radiance (atmospheric scattering) per surface band: strong in blue, tiny in SWIR.
_PATH = np.array([650, 450, 300, 220, 180, 140, 110, 100, 30, 20], np.float32)[:, None, None]
_TRANSMITTANCE = 0.9

Surface = np.ndarray  # (10, TILE, TILE) float32, PASTIS band order


def _coords(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u across, v along) in a randomly rotated frame centred on the tile."""
    theta = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:TILE, 0:TILE].astype(np.float32) - (TILE - 1) / 2
    return xx * np.cos(theta) + yy * np.sin(theta), -xx * np.sin(theta) + yy * np.cos(theta)


def _mix(frac: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> Surface:
    return bottom + frac[None] * (top - bottom)


def _fields(rng: np.random.Generator, u: np.ndarray, width: tuple[float, float]) -> np.ndarray:
    """Field index per pixel: parallel stripes across ``u``, random widths."""
    cuts = np.cumsum(rng.uniform(*width, 16)) - rng.uniform(0, width[1]) - TILE
    return np.searchsorted(cuts, u)


def annual_crop(rng: np.random.Generator) -> Surface:
    u, _ = _coords(rng)
    field = _fields(rng, u, (10.0, 22.0))
    # Fields are at different stages: bare, emerging or full cover.
    stage = rng.choice([0.05, 0.35, 0.85], 32) + rng.uniform(-0.05, 0.1, 32)
    soil = rng.uniform(0.8, 1.3, 32)
    rows = 0.5 + 0.5 * np.sin(2 * np.pi * u / rng.uniform(2.0, 3.5))
    frac = np.clip(stage[field] * (0.8 + 0.2 * rows) + 0.03 * smooth_noise(rng, u.shape, 1), 0, 1)
    return _mix(frac, E["crop"], E["soil"] * soil[field][None])


def permanent_crop(rng: np.random.Generator) -> Surface:
    u, v = _coords(rng)
    block = _fields(rng, u, (20.0, 40.0))
    period = rng.uniform(4.0, 7.0)
    # Regular rows of tree crowns, broken along the row, over dry grass and soil.
    crowns = (np.sin(2 * np.pi * u / period) > rng.uniform(-0.2, 0.3)) & (
        np.sin(2 * np.pi * v / rng.uniform(3.0, 6.0)) > -0.5
    )
    grass = rng.uniform(0.4, 0.8, 32)[block]  # dry grass between rows, summer-dry soils
    ground = _mix(grass, E["dry"], E["soil"])
    vigour = rng.uniform(0.7, 1.0, 32)[block] * crowns
    return _mix(vigour, E["orchard"], ground) * (1 + 0.03 * smooth_noise(rng, u.shape, 1))[None]


def forest(rng: np.random.Generator) -> Surface:
    frac = np.clip(rng.uniform(0.85, 0.97) + 0.06 * smooth_noise(rng, (TILE, TILE), 2.0), 0, 1)
    canopy = E["forest"].copy()
    canopy[5:8] *= rng.uniform(0.85, 1.2)  # conifer (dark) to broadleaf (bright) NIR
    shading = 1 + 0.15 * smooth_noise(rng, (TILE, TILE), 1.5)
    return _mix(frac, canopy, E["litter"]) * shading[None]


def herbaceous(rng: np.random.Generator) -> Surface:
    shape = (TILE, TILE)
    green = 1 / (1 + np.exp(-(2 * smooth_noise(rng, shape, 4.0) + rng.uniform(-1.5, 0.3))))
    surface = _mix(green, E["grass"], E["dry"])
    shrubs = smooth_noise(rng, shape, 1.5) > rng.uniform(1.0, 1.6)
    return np.where(shrubs[None], E["forest"], surface)


def pasture(rng: np.random.Generator) -> Surface:
    frac = np.clip(rng.uniform(0.75, 0.95) + 0.04 * smooth_noise(rng, (TILE, TILE), 8.0), 0, 1)
    return _mix(frac, E["grass"], E["soil"])


def highway(rng: np.random.Generator) -> Surface:
    surface = annual_crop(rng) if rng.random() < 0.5 else pasture(rng)
    for _ in range(1 + (rng.random() < 0.5)):  # sometimes a second road or a junction
        u, _ = _coords(rng)
        dist = np.abs(u - rng.uniform(-12, 12))
        width = rng.uniform(3.0, 7.0)
        surface = np.where((dist < width / 2 + 2)[None], E["dry"], surface)  # verges
        road = E["concrete"] if rng.random() < 0.6 else E["asphalt"]
        surface = np.where((dist < width / 2)[None], road, surface)
    return surface


def industrial(rng: np.random.Generator) -> Surface:
    # Large rectangles (halls, car parks) from random cuts along both axes: blocky texture.
    ys = np.searchsorted(np.cumsum(rng.uniform(6, 20, 12)), np.arange(TILE))
    xs = np.searchsorted(np.cumsum(rng.uniform(6, 20, 12)), np.arange(TILE))
    block = ys[:, None] * 13 + xs[None, :]
    names = ["concrete", "asphalt", "dark_roof", "soil", "grass"]
    kind = rng.choice(len(names), 13 * 13, p=[0.45, 0.25, 0.15, 0.1, 0.05])
    gain = rng.uniform(1.0, 1.6, 13 * 13)
    gain[kind != 0] = rng.uniform(0.85, 1.15, int((kind != 0).sum()))
    table = np.stack([E[n][:, 0, 0] for n in names])[kind] * gain[:, None]  # (blocks, 10)
    surface = table[block].transpose(2, 0, 1)
    return surface * (1 + 0.03 * smooth_noise(rng, (TILE, TILE), 0.7))[None]


def residential(rng: np.random.Generator) -> Surface:
    shape = (TILE, TILE)
    roofs = smooth_noise(rng, shape, 1.0) > rng.uniform(-0.3, 0.3)
    red = 1 / (1 + np.exp(-3 * smooth_noise(rng, shape, 0.8)))
    roof = _mix(red, E["red_roof"], E["concrete"])
    garden = _mix(np.clip(0.7 + 0.2 * smooth_noise(rng, shape, 1.0), 0, 1), E["grass"], E["soil"])
    surface = np.where(roofs[None], roof, garden)
    u, v = _coords(rng)
    spacing = rng.uniform(10, 16)
    streets = (np.abs(u % spacing) < 1) | (np.abs(v % spacing) < 1)
    return np.where(streets[None], E["asphalt"], surface)


def river(rng: np.random.Generator) -> Surface:
    land = (pasture, forest, herbaceous)[rng.integers(3)]
    surface = land(rng)
    u, v = _coords(rng)
    centre = rng.uniform(-10, 10) + rng.uniform(2, 8) * np.sin(
        2 * np.pi * u / rng.uniform(40, 120) + rng.uniform(0, 2 * np.pi)
    )
    dist = np.abs(v - centre)
    half = rng.uniform(3.0, 7.0)
    surface = np.where((dist < half + 2)[None], E["forest"], surface)  # riparian trees
    water = E["river"] * rng.uniform(0.8, 1.3)
    return np.where((dist < half)[None], water, surface)


def sea_lake(rng: np.random.Generator) -> Surface:
    water = E["sea"] * rng.uniform(0.8, 1.4)
    surface = water * (1 + 0.05 * smooth_noise(rng, (TILE, TILE), 10.0))[None]
    if rng.random() < 0.3:  # a shore: at most ~30 % land
        u, _ = _coords(rng)
        land = (pasture if rng.random() < 0.5 else forest)(rng)
        surface = np.where((u > rng.uniform(12, 32))[None], land, surface)
    return surface


GENERATORS: dict[str, Callable[[np.random.Generator], Surface]] = {
    "AnnualCrop": annual_crop,
    "Forest": forest,
    "HerbaceousVegetation": herbaceous,
    "Highway": highway,
    "Industrial": industrial,
    "Pasture": pasture,
    "PermanentCrop": permanent_crop,
    "Residential": residential,
    "River": river,
    "SeaLake": sea_lake,
}


def generate_tile(rng: np.random.Generator, cls: str) -> np.ndarray:
    """One tile of class ``cls``: uint16 (13, 64, 64) TOA reflectance x1e4 in BANDS order."""
    surface = GENERATORS[cls](rng).astype(np.float32)
    surface *= rng.uniform(0.9, 1.1)  # illumination / season
    toa = _to_toa(rng, surface)
    toa += rng.standard_normal(toa.shape, dtype=np.float32) * (10.0 + 0.01 * toa)
    return np.clip(np.rint(toa), 1, 28000).astype(np.uint16)


def _to_toa(rng: np.random.Generator, surface: Surface) -> np.ndarray:
    """Surface (10 bands) to the 13 TOA bands, with each band's native resolution."""
    aerosol = rng.uniform(0.85, 1.15)
    toa10 = aerosol * _PATH + _TRANSMITTANCE * surface
    b01 = aerosol * 950.0 + _TRANSMITTANCE * 1.05 * surface[0]  # coastal: like blue, hazier
    b09 = aerosol * 150.0 + 0.25 * surface[7]  # water-vapour band: NIR, mostly absorbed
    b10 = rng.uniform(8, 30) + 0.003 * surface[8]  # cirrus band: sees almost no ground
    out = np.empty((len(BANDS), TILE, TILE), np.float32)
    out[0], out[8], out[9] = (_blur(b) for b in (b01, b09, b10))  # 60 m bands
    out[1:8] = toa10[0:7]  # B02..B08
    out[10], out[11], out[12] = toa10[8], toa10[9], toa10[7]  # B11, B12, B8A (B8A last)
    for band in (4, 5, 6, 10, 11, 12):  # 20 m bands: B05-B07, B11, B12, B8A
        out[band] = _coarsen(out[band], 2)
    return out


def _coarsen(img: np.ndarray, factor: int) -> np.ndarray:
    """Block-average then repeat: a band sampled coarser and resampled to 10 m."""
    h, w = img.shape
    blocks = img.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    return np.repeat(np.repeat(blocks, factor, axis=0), factor, axis=1)


def _blur(img: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    """Gaussian blur (periodic FFT): a 60 m band resampled to 10 m."""
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.rfftfreq(img.shape[1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(img) * kernel, s=img.shape).astype(np.float32)
