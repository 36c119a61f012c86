"""Sky of the synthetic PASTIS patches: cloudy-date Markov chain, clouds, shadows, haze and
clear-sky wisps.

See :mod:`pimc.data.synthetic_pastis` for what is modelled and the sources of the statistics.
"""

from __future__ import annotations

import numpy as np

# Clouds are bright and nearly flat, a little brighter in blue and darker in SWIR.
_CLOUD_SHAPE = np.array([1.0, 1.0, 0.98, 0.97, 0.96, 0.95, 0.95, 0.94, 0.75, 0.6], np.float32)
# Shadows keep only diffuse skylight, which is bluer: relative transmission per band.
_SHADOW_SHAPE = np.array([1.5, 1.35, 1.25, 1.1, 1.0, 1.0, 1.0, 1.0, 0.95, 0.9], np.float32)
# Haze: additive path reflectance (x1e4) at unit thickness, falling with wavelength.
_HAZE = np.array([900, 750, 600, 520, 470, 430, 400, 390, 200, 120], np.float32)

# Sky states recorded per pixel and date in Patch.sky.
CLEAR, CLOUD, SHADOW, HAZE, WISP = 0, 1, 2, 3, 4
_CORR_DAYS = 7.0  # decorrelation time of the cloudy/clear state
_SEASONAL_SWING = 0.12  # at cloud_prob 0.6: winter ~0.72, summer ~0.48
_WINTER_PEAK_DAY = 136  # 2019-01-15
_HAZE_SHARE = 0.3  # of cloudy dates
_OVERCAST_SHARE = 0.2  # of cloud (not haze) dates
_WISP_DATE_SHARE = 0.25  # of clear dates


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise (periodic FFT filter), float32."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=shape)
    return (field / (field.std() + 1e-12)).astype(np.float32)


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


def add_sky(
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
