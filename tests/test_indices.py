"""pimc.transforms.indices: formulas, band lookup by name, edge-case policy, shapes, errors."""

from __future__ import annotations

import math

import pytest
import torch

from pimc.core.bands import EUROSAT_BANDS, PASTIS_BANDS
from pimc.core.errors import ConfigError, InputError
from pimc.transforms.indices import (
    INDICES,
    compute_indices,
)

# One pixel, reflectance x 1e4: B=0.05, G=0.08, R=0.10, NIR=0.40.
PIXEL = {"B02": 500, "B03": 800, "B04": 1000, "B08": 4000}


def _pastis_pixel(values: dict[str, float], dtype=torch.float64) -> torch.Tensor:
    """Shape (10,) in PASTIS order; bands not in ``values`` get distinct filler values."""
    return torch.tensor(
        [values.get(b, 1234 + 7 * i) for i, b in enumerate(PASTIS_BANDS)], dtype=dtype
    )


def _eurosat_pixel(values: dict[str, float], dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(
        [values.get(b, 4321 + 3 * i) for i, b in enumerate(EUROSAT_BANDS)], dtype=dtype
    )


def test_registry_lists_the_four_indices_with_their_bands():
    assert set(INDICES) == {"ndvi", "evi", "savi", "ndwi"}
    assert INDICES["evi"].bands == ("B08", "B04", "B02")
    assert INDICES["ndwi"].bands == ("B03", "B08")


def test_hand_computed_values():
    x = _pastis_pixel(PIXEL)
    out = compute_indices(x, PASTIS_BANDS, ("ndvi", "evi", "savi", "ndwi"), band_dim=-1)
    nir, red, blue, green = 0.40, 0.10, 0.05, 0.08
    expected = [
        (nir - red) / (nir + red),  # 0.6
        2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1),  # 0.75 / 1.625
        1.5 * (nir - red) / (nir + red + 0.5),  # 0.45
        (green - nir) / (green + nir),  # -0.32 / 0.48
    ]
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))
    assert out[0].item() == pytest.approx(0.6)
    assert out[1].item() == pytest.approx(0.75 / 1.625)
    assert out[2].item() == pytest.approx(0.45)
    assert out[3].item() == pytest.approx(-2 / 3)


def test_scaling_matters_for_evi_and_savi():
    """Without the 1e-4 scaling EVI/SAVI would be ~2.5*... / NIR-dominated, not these values."""
    x = _pastis_pixel(PIXEL)
    evi, savi = compute_indices(x, PASTIS_BANDS, ("evi", "savi"), band_dim=0)
    unscaled_evi = 2.5 * 3000 / (4000 + 6000 - 3750 + 1)
    assert evi.item() != pytest.approx(unscaled_evi, rel=1e-3)
    assert savi.item() == pytest.approx(1.5 * 0.3 / 1.0)


def test_eurosat_and_pastis_orders_give_the_same_indices():
    torch.manual_seed(0)
    n = 50
    phys = {b: torch.randint(0, 8000, (n,)).double() for b in ("B02", "B03", "B04", "B08")}
    pastis = torch.stack([phys.get(b, torch.full((n,), 99.0)) for b in PASTIS_BANDS], dim=-1)
    eurosat = torch.stack([phys.get(b, torch.full((n,), -5.0)) for b in EUROSAT_BANDS], dim=-1)
    names = ("ndvi", "evi", "savi", "ndwi")
    a = compute_indices(pastis, PASTIS_BANDS, names, band_dim=-1)
    b = compute_indices(eurosat, EUROSAT_BANDS, names, band_dim=-1)
    assert a.shape == (n, 4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_band_names_are_case_insensitive_and_unpadded_names_accepted():
    x = _pastis_pixel(PIXEL)
    loose = [b.lower().replace("b0", "b") for b in PASTIS_BANDS]  # "b2", "b3", ..., "b8a"
    torch.testing.assert_close(
        compute_indices(x, loose, band_dim=0), compute_indices(x, PASTIS_BANDS, band_dim=0)
    )


def test_zero_denominator_gives_zero_not_nan():
    zeros = _pastis_pixel({"B02": 0, "B03": 0, "B04": 0, "B08": 0})
    out = compute_indices(zeros, PASTIS_BANDS, ("ndvi", "savi", "ndwi", "evi"), band_dim=0)
    assert torch.isfinite(out).all()
    # NDVI/NDWI denominators are 0 -> 0.0; SAVI/EVI denominators are 0.5 / 1 -> 0 / d = 0.0.
    assert out.tolist() == [0.0, 0.0, 0.0, 0.0]

    # EVI's own denominator NIR + 6R - 7.5B + 1 = 0: NIR=0.5, R=0, B=0.2.
    evi_zero = _pastis_pixel({"B02": 2000, "B04": 0, "B08": 5000})
    assert compute_indices(evi_zero, PASTIS_BANDS, ("evi",), band_dim=0).item() == 0.0


def test_evi_is_clipped_near_a_vanishing_denominator():
    # Denominator 0.5 + 0 - 7.5 * 0.199 + 1 = 0.0075 -> raw EVI = 2.5 * 0.5 / 0.0075 = 166.7.
    bright_blue = _pastis_pixel({"B02": 1990, "B04": 0, "B08": 5000})
    assert compute_indices(bright_blue, PASTIS_BANDS, ("evi",), band_dim=0).item() == 1.0
    # Negative side: a tiny positive denominator with NIR < R.
    neg = _pastis_pixel({"B02": 1800, "B04": 600, "B08": 0})  # den = 0.36 - 1.35 + 1 = 0.01
    assert compute_indices(neg, PASTIS_BANDS, ("evi",), band_dim=0).item() == -1.0


def test_nan_propagates_only_to_indices_using_that_band():
    x = _pastis_pixel({**PIXEL, "B02": math.nan})
    ndvi, evi, savi, ndwi = compute_indices(x, PASTIS_BANDS, ("ndvi", "evi", "savi", "ndwi"), 0)
    assert math.isnan(evi.item())  # EVI uses blue; clamp must not turn NaN into +-1
    assert not any(math.isnan(v.item()) for v in (ndvi, savi, ndwi))
    x_nir = _pastis_pixel({**PIXEL, "B08": math.nan})
    assert torch.isnan(compute_indices(x_nir, PASTIS_BANDS, band_dim=0)).all()


def test_int16_input_gives_float32_output_with_same_values():
    x64 = _pastis_pixel(PIXEL, dtype=torch.float64)
    x16 = _pastis_pixel(PIXEL, dtype=torch.int16)
    out16 = compute_indices(x16, PASTIS_BANDS, band_dim=0)
    assert out16.dtype == torch.float32
    torch.testing.assert_close(
        out16, compute_indices(x64, PASTIS_BANDS, band_dim=0).float(), rtol=1e-6, atol=1e-6
    )
    assert compute_indices(x16.to(torch.uint8) * 0, PASTIS_BANDS, band_dim=0).dtype == (
        torch.float32
    )


@pytest.mark.parametrize(
    ("shape", "band_dim", "expected"),
    [
        ((6, 10, 4, 5), -3, (6, 3, 4, 5)),  # PASTIS patch (T, C, H, W)
        ((6, 10, 4, 5), 1, (6, 3, 4, 5)),
        ((7, 6, 10), -1, (7, 6, 3)),  # pixels (N, T, C)
        ((10,), 0, (3,)),
        ((10, 2, 3), 0, (3, 2, 3)),
    ],
)
def test_output_shape_for_band_dim(shape, band_dim, expected):
    torch.manual_seed(1)
    x = torch.randint(1, 6000, shape, dtype=torch.int16)
    out = compute_indices(x, PASTIS_BANDS, band_dim=band_dim)
    assert out.shape == expected
    # Each output slice equals the formula applied to that slice's bands.
    moved = x.movedim(band_dim, -1).double() * 1e-4
    nir, red = moved[..., PASTIS_BANDS.index("B08")], moved[..., PASTIS_BANDS.index("B04")]
    torch.testing.assert_close(
        out.select(band_dim, 0).double(), (nir - red) / (nir + red), rtol=1e-5, atol=1e-6
    )


def test_output_order_follows_names():
    x = _pastis_pixel(PIXEL)
    a = compute_indices(x, PASTIS_BANDS, ("savi", "ndvi"), band_dim=0)
    b = compute_indices(x, PASTIS_BANDS, ("ndvi", "savi"), band_dim=0)
    torch.testing.assert_close(a, b.flip(0))


def test_unknown_index_name_lists_known_names():
    x = _pastis_pixel(PIXEL)
    with pytest.raises(ConfigError, match=r"unknown index name 'gndvi'.*'evi'.*'ndvi'"):
        compute_indices(x, PASTIS_BANDS, ("ndvi", "gndvi"), band_dim=0)


def test_missing_band_names_band_and_index():
    bands = ("B03", "B04", "B08")  # no blue
    x = torch.ones(3, 4)
    with pytest.raises(ConfigError, match=r"'evi' needs band B02"):
        compute_indices(x, bands, ("ndvi", "evi"), band_dim=0)
    # NDVI alone only needs B04/B08.
    assert compute_indices(x, bands, ("ndvi",), band_dim=0).shape == (1, 4)


@pytest.mark.parametrize(
    ("bands", "band_dim", "match"),
    [
        (PASTIS_BANDS[:-1], -1, "lists 9 bands but x has 10"),
        (("B02",) * 10, -1, "duplicate"),
        (PASTIS_BANDS, 2, "band_dim=2 is out of range"),
    ],
)
def test_band_list_errors(bands, band_dim, match):
    with pytest.raises(InputError, match=match):
        compute_indices(torch.ones(4, 10), bands, band_dim=band_dim)


def test_empty_names_is_an_error_and_single_string_is_accepted():
    x = _pastis_pixel(PIXEL)
    with pytest.raises(ConfigError, match="names is empty"):
        compute_indices(x, PASTIS_BANDS, (), band_dim=0)
    assert compute_indices(x, PASTIS_BANDS, "ndvi", band_dim=0).shape == (1,)
