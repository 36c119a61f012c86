"""pimc.metrics against hand-computed values and slow loop references."""

from __future__ import annotations

import math

import pytest
import torch

from pimc.core.errors import ConfigError
from pimc.metrics import (
    confusion_matrix,
    macro_f1,
    mae,
    miou,
    overall_accuracy,
    per_class_f1,
    per_class_iou,
    rmse,
)

# 7 samples, 3 classes: (true, pred) = (0,0) (1,1) (1,2) (2,2) (1,1) (2,0) (0,2)
PRED = torch.tensor([0, 1, 2, 2, 1, 0, 2])
TARGET = torch.tensor([0, 1, 1, 2, 1, 2, 0])
HAND_CM = [[1, 0, 1], [0, 2, 1], [1, 0, 1]]


def _slow_confusion(pred, target, c, ignore=None):
    cm = [[0] * c for _ in range(c)]
    for p, t in zip(pred.tolist(), target.tolist(), strict=True):
        if t != ignore:
            cm[t][p] += 1
    return torch.tensor(cm)


def _slow_scores(cm):
    """Per-class F1 and IoU by loops; None where a class is absent from pred and target."""
    c = len(cm)
    f1s, ious = [], []
    for k in range(c):
        tp = cm[k][k]
        fp = sum(cm[t][k] for t in range(c)) - tp
        fn = sum(cm[k][p] for p in range(c)) - tp
        if tp + fp + fn == 0:
            f1s.append(None)
            ious.append(None)
        else:
            f1s.append(2 * tp / (2 * tp + fp + fn))
            ious.append(tp / (tp + fp + fn))
    return f1s, ious


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert cm.tolist() == HAND_CM
    assert cm.dtype == torch.int64


def test_scores_by_hand():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert overall_accuracy(cm) == pytest.approx(4 / 7)
    # F1 = 2TP / (2TP + FP + FN): class 0: 2/4, class 1: 4/5, class 2: 2/5
    assert per_class_f1(cm).tolist() == pytest.approx([0.5, 0.8, 0.4])
    assert macro_f1(cm) == pytest.approx((0.5 + 0.8 + 0.4) / 3)
    # IoU = TP / (TP + FP + FN): 1/3, 2/3, 1/4
    assert per_class_iou(cm).tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 4])
    assert miou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 4) / 3)


def test_ignore_index_skips_samples():
    pred = torch.cat([PRED, torch.tensor([1, 2])])
    target = torch.cat([TARGET, torch.tensor([19, 19])])
    assert confusion_matrix(pred, target, 3, ignore_index=19).tolist() == HAND_CM


def test_absent_class_is_excluded_from_means():
    cm = confusion_matrix(PRED, TARGET, 5)  # classes 3 and 4 never occur
    assert math.isnan(per_class_iou(cm)[3]) and math.isnan(per_class_f1(cm)[4])
    assert macro_f1(cm) == pytest.approx((0.5 + 0.8 + 0.4) / 3)
    assert miou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 4) / 3)


def test_present_but_never_predicted_counts_as_zero():
    cm = confusion_matrix(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1]), 2)
    assert per_class_f1(cm).tolist() == pytest.approx([0.8, 0.0])
    assert per_class_iou(cm).tolist() == pytest.approx([2 / 3, 0.0])
    assert macro_f1(cm) == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(5))
def test_against_slow_reference(seed):
    g = torch.Generator().manual_seed(seed)
    c = 6
    target = torch.randint(0, c - 1, (200,), generator=g)  # class 5 never a target
    pred = torch.randint(0, c - 2, (200,), generator=g)  # ... nor predicted: absent
    target[torch.rand(200, generator=g) < 0.1] = 99
    cm = confusion_matrix(pred, target, c, ignore_index=99)
    assert torch.equal(cm, _slow_confusion(pred, target, c, ignore=99))
    f1s, ious = _slow_scores(cm.tolist())
    for got, want in ((per_class_f1(cm), f1s), (per_class_iou(cm), ious)):
        for g_, w in zip(got.tolist(), want, strict=True):
            assert math.isnan(g_) if w is None else g_ == pytest.approx(w)
    assert macro_f1(cm) == pytest.approx(sum(f for f in f1s if f is not None) / 5)
    assert miou(cm) == pytest.approx(sum(i for i in ious if i is not None) / 5)
    assert overall_accuracy(cm) == pytest.approx(sum(cm[k, k] for k in range(c)) / cm.sum())


def test_out_of_range_ids_name_the_fix():
    with pytest.raises(ConfigError, match="num_classes"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ConfigError, match="ignore_index"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 19]), 3)


def test_rmse_mae_by_hand():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target = torch.tensor([1.0, 0.0, 3.0, 8.0])  # errors 0, 2, 0, -4
    assert float(rmse(pred, target)) == pytest.approx(math.sqrt((4 + 16) / 4))
    assert float(mae(pred, target)) == pytest.approx(6 / 4)


def test_rmse_mae_per_channel_against_loops():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(7, 3, 5, generator=g), torch.randn(7, 3, 5, generator=g)
    r, a = rmse(pred, target, dim=(0, 2)), mae(pred, target, dim=(0, 2))
    assert r.shape == a.shape == (3,)
    for i in range(3):
        sq = [float(pred[n, i, h] - target[n, i, h]) ** 2 for n in range(7) for h in range(5)]
        ab = [abs(float(pred[n, i, h] - target[n, i, h])) for n in range(7) for h in range(5)]
        assert float(r[i]) == pytest.approx(math.sqrt(sum(sq) / len(sq)))
        assert float(a[i]) == pytest.approx(sum(ab) / len(ab))
    with pytest.raises(ConfigError, match="shape"):
        rmse(pred, target[:, :2])
