"""Vegetation / water indices from Sentinel-2 reflectance, in pure torch.

The index series (one value per date) are what :mod:`pimc.transforms.recurrence` turns into
recurrence plots. Everything here is device- and dtype-agnostic and does no I/O.

Conventions:

* **Units.** Reflectance arrives as stored in the PASTIS / EuroSAT files, i.e. surface
  reflectance x 1e4 (often ``int16``/``uint16``). It is cast to float (``float64`` input stays
  ``float64``; every other dtype becomes ``float32``) and scaled by 1e-4 *before* any formula,
  because EVI and SAVI contain additive constants (``+1``, ``+0.5``) that assume reflectance in
  [0, 1].
* **Bands by name.** Files order their bands differently (``PASTIS_BANDS``, ``EUROSAT_BANDS``
  in :mod:`pimc.core.bands`), so callers pass the names of the bands along ``band_dim`` and
  each index picks the bands it needs by name: NIR = B08, red = B04, blue = B02, green = B03.
* **Zero denominators -> 0.0.** A denominator that is exactly zero (e.g. NIR = red = 0 for
  NDVI, the all-zero no-data pixels of PASTIS) gives 0.0 instead of inf/NaN, so no-data pixels
  do not poison recurrence plots with non-finite values.
* **NaN in -> NaN out.** NaN reflectance propagates to the indices that use that band; nothing is
  filled here. :func:`pimc.transforms.recurrence.recurrence_plot` rejects non-finite series, so
  callers must clean or interpolate NaN dates before building recurrence plots.
* **EVI is clipped to [-1, 1].** Its denominator ``NIR + 6R - 7.5B + 1`` approaches zero for
  bright-blue pixels (clouds, snow, haze) even when the reflectances are valid, and EVI then
  explodes to values of +/- hundreds that would dominate a distance-based recurrence plot.
  Clipping to [-1, 1] is the usual convention (vegetation lies in about [0, 1]). NDVI, SAVI and
  NDWI are already within [-1, 1] for non-negative reflectance and are *not* clipped, so a value
  outside that range still reveals a negative-reflectance artefact in the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pimc.core.bands import canonical_band
from pimc.core.errors import ConfigError, InputError

__all__ = [
    "INDICES",
    "REFLECTANCE_SCALE",
    "IndexSpec",
    "compute_indices",
    "evi",
    "ndvi",
    "ndwi",
    "savi",
]

#: Multiply stored digital numbers by this to get surface reflectance in [0, 1].
REFLECTANCE_SCALE = 1e-4


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with exactly-zero denominators mapped to 0.0 (NaN still propagates).

    Args:
        num: Numerator, any shape broadcastable with ``den``.
        den: Denominator, same shape as ``num``.

    Returns:
        The element-wise ratio, same shape as the inputs.
    """
    # NaN == 0 is False, so NaN inputs fall through to the division and stay NaN.
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, 1.0, den))


def ndvi(nir: Tensor, red: Tensor) -> Tensor:
    """Normalized difference vegetation index ``(NIR - R) / (NIR + R)``.

    Args:
        nir: B08 reflectance in [0, 1], any shape ``(...)``.
        red: B04 reflectance, same shape.

    Returns:
        NDVI, shape ``(...)``.
    """
    return _safe_ratio(nir - red, nir + red)


def evi(nir: Tensor, red: Tensor, blue: Tensor) -> Tensor:
    """Enhanced vegetation index ``2.5 (NIR - R) / (NIR + 6R - 7.5B + 1)``, clipped to [-1, 1].

    Args:
        nir: B08 reflectance in [0, 1], any shape ``(...)``.
        red: B04 reflectance, same shape.
        blue: B02 reflectance, same shape.

    Returns:
        EVI, shape ``(...)``. Clipped because the denominator nears zero for bright-blue pixels
        (see the module docstring); ``clamp`` keeps NaN as NaN.
    """
    return _safe_ratio(2.5 * (nir - red), nir + 6.0 * red - 7.5 * blue + 1.0).clamp_(-1.0, 1.0)


def savi(nir: Tensor, red: Tensor) -> Tensor:
    """Soil-adjusted vegetation index ``1.5 (NIR - R) / (NIR + R + 0.5)`` (L = 0.5).

    Args:
        nir: B08 reflectance in [0, 1], any shape ``(...)``.
        red: B04 reflectance, same shape.

    Returns:
        SAVI, shape ``(...)``.
    """
    return _safe_ratio(1.5 * (nir - red), nir + red + 0.5)


def ndwi(green: Tensor, nir: Tensor) -> Tensor:
    """McFeeters normalized difference water index ``(G - NIR) / (G + NIR)``.

    Args:
        green: B03 reflectance in [0, 1], any shape ``(...)``.
        nir: B08 reflectance, same shape.

    Returns:
        NDWI, shape ``(...)``.
    """
    return _safe_ratio(green - nir, green + nir)


@dataclass(frozen=True)
class IndexSpec:
    """How to compute one index.

    Attributes:
        name: Registry key, lower case (``"ndvi"``).
        bands: Sentinel-2 band names passed positionally to ``formula``, in order.
        formula: Function of the scaled reflectance tensors, one per entry of ``bands``, each of
            shape ``(...)``, returning the index of shape ``(...)``.
        description: One-line human-readable formula.
    """

    name: str
    bands: tuple[str, ...]
    formula: Callable[..., Tensor]
    description: str


#: Known indices by name. Add an entry here to make a new index available to configs.
INDICES: dict[str, IndexSpec] = {
    spec.name: spec
    for spec in (
        IndexSpec("ndvi", ("B08", "B04"), ndvi, "(NIR - R) / (NIR + R)"),
        IndexSpec("evi", ("B08", "B04", "B02"), evi, "2.5 (NIR - R) / (NIR + 6R - 7.5B + 1)"),
        IndexSpec("savi", ("B08", "B04"), savi, "1.5 (NIR - R) / (NIR + R + 0.5)"),
        IndexSpec("ndwi", ("B03", "B08"), ndwi, "(G - NIR) / (G + NIR), McFeeters"),
    )
}


def compute_indices(
    x: Tensor,
    bands: Sequence[str],
    names: Sequence[str] = ("ndvi", "evi", "savi"),
    band_dim: int = -3,
) -> Tensor:
    """Compute spectral indices from reflectance and stack them along ``band_dim``.

    Args:
        x: Reflectance x 1e4 (any real dtype, any device) with ``len(bands)`` bands along
            ``band_dim``, e.g. ``(T, 10, H, W)`` with ``band_dim=-3`` (PASTIS patch) or
            ``(N, T, 13)`` with ``band_dim=-1`` (EuroSAT pixels).
        bands: Name of each band along ``band_dim`` in order, e.g. ``PASTIS_BANDS``. Names are
            case-insensitive and ``"B8"`` means ``"B08"``.
        names: Indices to compute, keys of :data:`INDICES`, in output order.
        band_dim: Dimension of ``x`` holding the bands; negative values count from the end.

    Returns:
        The indices, shaped like ``x`` with ``band_dim`` of size ``len(names)``: ``(T, 10, H, W)``
        -> ``(T, 3, H, W)``; ``(N, T, 13)`` with ``band_dim=-1`` -> ``(N, T, 3)``. The dtype is
        ``float64`` for ``float64`` input and ``float32`` otherwise. Zero denominators give 0.0,
        NaN propagates, EVI is clipped to [-1, 1] (see the module docstring).

    Raises:
        ConfigError: If ``names`` is empty, an index name is unknown, or a band an index needs
            is missing from ``bands``.
        InputError: If ``bands`` has duplicates or does not match ``x.shape[band_dim]``, or
            ``band_dim`` is out of range.
    """
    if isinstance(names, str):
        names = (names,)
    if len(names) == 0:
        raise ConfigError("names is empty: pass at least one index name, e.g. ('ndvi',).")
    position = _band_positions(x, bands, band_dim)
    specs = [_index_spec(name, bands, position) for name in names]
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    # Scale only the bands that are used: cheaper than converting every band of a big patch.
    needed = {band for spec in specs for band in spec.bands}
    scaled = {
        band: x.select(band_dim, position[band]).to(work_dtype) * REFLECTANCE_SCALE
        for band in needed
    }
    out = [spec.formula(*(scaled[b] for b in spec.bands)) for spec in specs]
    return torch.stack(out, dim=band_dim)


def _band_positions(x: Tensor, bands: Sequence[str], band_dim: int) -> dict[str, int]:
    """Canonical band name -> its position along ``band_dim`` of ``x`` (raises InputError)."""
    if not -x.ndim <= band_dim < x.ndim:
        raise InputError(
            f"band_dim={band_dim} is out of range for an input of shape {tuple(x.shape)}; "
            f"pass a dimension in [{-x.ndim}, {x.ndim - 1}]."
        )
    canonical = [canonical_band(b) for b in bands]
    if len(set(canonical)) != len(canonical):
        raise InputError(f"bands={list(bands)} contains a duplicate band name; list each once.")
    if x.shape[band_dim] != len(canonical):
        raise InputError(
            f"bands lists {len(canonical)} bands but x has {x.shape[band_dim]} along "
            f"band_dim={band_dim} (shape {tuple(x.shape)}); pass one name per band in file order "
            "or fix band_dim."
        )
    return {b: i for i, b in enumerate(canonical)}


def _index_spec(name: str, bands: Sequence[str], position: dict[str, int]) -> IndexSpec:
    """The :data:`INDICES` entry ``name``, checked against the available bands."""
    spec = INDICES.get(str(name).strip().lower())
    if spec is None:
        raise ConfigError(
            f"unknown index name {name!r} in names; known indices: {sorted(INDICES)}."
        )
    for band in spec.bands:
        if band not in position:
            raise ConfigError(
                f"index {spec.name!r} needs band {band} but bands={list(bands)} lacks it; "
                f"pass data that includes {band} or drop {spec.name!r} from names."
            )
    return spec
