"""Each figure function writes a readable PNG of its figure's size; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pimc import plots
from pimc.core.errors import InputError
from pimc.data import PASTIS

INDICES = ("ndvi", "evi", "savi")


def _png(path, inches: tuple[float, float]) -> None:
    """``path`` is a PNG of ``inches`` x DPI pixels that decodes fully."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel: a truncated file fails here
        expected = [side * plots.DPI for side in inches]
        # matplotlib truncates fractional pixels
        assert all(abs(got - want) < 1 for got, want in zip(image.size, expected, strict=True))
        assert len(set(np.asarray(image.convert("L")).ravel().tolist())) > 1  # not blank


def test_rp_gallery(tmp_path):
    means = {1: np.random.default_rng(0).random((3, 8, 8)), 5: np.zeros((3, 8, 8))}
    out = plots.rp_gallery(means, INDICES, PASTIS.classes, tmp_path / "g.png")
    _png(out, (1.6 * 2 + 1, 1.6 * 3 + 0.6))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temp file left


def test_learning_curves(tmp_path):
    train = [{"step": s, "train/loss": 2.0 / (s + 1)} for s in range(10)]
    val = [{"step": s, "val/loss": 1.0 / (s + 1), "val/top1": s / 10} for s in (4, 9)]
    _png(plots.learning_curves(train, val, tmp_path / "both.png"), (9, 3.4))
    only_loss = [{"step": 3, "val/loss": 0.5}]
    _png(plots.learning_curves(train, only_loss, tmp_path / "loss.png"), (5, 3.4))


def test_task_curves(tmp_path):
    rows = [{"epoch": e, "train/loss": 1.0 / (e + 1), "val/acc": e / 5} for e in range(5)]
    curves = {"pimc_linear": rows, "random_init": rows[::-1]}
    _png(plots.task_curves(curves, "val/acc", tmp_path / "c.png", "task"), (10, 3.6))


def test_confusion_matrix(tmp_path):
    names = ["a", "b", "c"]
    cm = torch.tensor([[5, 1, 0], [0, 3, 2], [1, 0, 0]])
    n = len(names)
    out = plots.confusion_matrix(cm, names, tmp_path / "cm.png", "cm")
    _png(out, (2.5 + 0.45 * n, 2 + 0.45 * n))


def test_class_map_and_forecast_maps(tmp_path):
    classes = np.random.default_rng(0).integers(0, 20, (16, 16))
    names = dict(enumerate(PASTIS.classes))
    _png(plots.class_map(classes, names, tmp_path / "map.png", "classes"), (6.5, 4.5))
    forecast = np.random.default_rng(1).random((3, 4, 16, 16))
    out = plots.forecast_maps(forecast, INDICES, ["2019-06-01", "2019-06-11"], tmp_path / "f.png")
    _png(out, (3.2 * 2, 2.8 * 3))  # first and last step, one row per index


def test_class_colors_cover_pastis_ids():
    colors = plots.class_colors()
    assert set(colors) == set(range(len(PASTIS.classes)))
    assert len(set(colors.values())) == len(colors)  # every class tells apart from the others
    assert all(len(c) == 4 and all(0 <= v <= 255 for v in c) for c in colors.values())
    assert all(c[3] == 255 for c in colors.values())  # opaque, for GeoTIFF colormaps


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: plots.rp_gallery({}, INDICES, PASTIS.classes, p), "means is empty"),
        (
            lambda p: plots.rp_gallery({1: np.zeros((2, 8, 8))}, INDICES, PASTIS.classes, p),
            r"class 1's plot has shape \(2, 8, 8\); expected \(I=3",
        ),
        (
            lambda p: plots.rp_gallery({25: np.zeros((3, 8, 8))}, INDICES, PASTIS.classes, p),
            "class id 25 has no name",
        ),
        (
            lambda p: plots.confusion_matrix(torch.zeros(3, 2), ["a", "b", "c"], p, "t"),
            r"cm has shape \(3, 2\); expected \(3, 3\)",
        ),
        (lambda p: plots.class_map(np.zeros((2, 4, 4)), {}, p, "t"), r"expected \(H, W\)"),
        (
            lambda p: plots.forecast_maps(np.zeros((2, 4, 8, 8)), INDICES, [], p),
            r"forecast has shape \(2, 4, 8, 8\); expected \(I=3",
        ),
    ],
)
def test_bad_input_is_refused_before_writing(tmp_path, call, match):
    path = tmp_path / "bad.png"
    with pytest.raises(InputError, match=match):
        call(path)
    assert not path.exists()
