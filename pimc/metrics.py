"""Evaluation metrics for the downstream tasks, in plain torch.

Classification metrics all derive from one confusion matrix (rows: true class, columns:
predicted class), built with a single ``torch.bincount``. A class that appears neither in the
targets nor in the predictions has no defined F1 or IoU (0/0): its per-class value is NaN and it
is left out of the macro means, as in torchmetrics' ``ignore``-absent behaviour and PASTIS'
reported mIoU. A class that is present but never predicted (or predicted but never present)
counts with F1 = IoU = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pimc.core.errors import ConfigError

__all__ = [
    "confusion_matrix",
    "mae",
    "macro_f1",
    "miou",
    "overall_accuracy",
    "per_class_f1",
    "per_class_iou",
    "rmse",
]


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None
) -> Tensor:
    """Counts of (true, predicted) class pairs.

    Args:
        pred: int ``(N,)`` (or any shape) predicted class ids in ``[0, num_classes)``.
        target: int, same shape as ``pred``; entries equal to ``ignore_index`` are skipped.
        num_classes: C.
        ignore_index: Target value to leave out (e.g. PASTIS' void label), or None.

    Returns:
        int64 ``(C, C)``; entry ``[t, p]`` counts samples of true class t predicted as p.

    Raises:
        ConfigError: shapes differ, or a kept id lies outside ``[0, num_classes)``.
    """
    pred, target = torch.as_tensor(pred).reshape(-1), torch.as_tensor(target).reshape(-1)
    if pred.shape != target.shape:
        raise ConfigError(f"pred has {pred.numel()} entries but target has {target.numel()}")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    pred, target = pred.long().cpu(), target.long().cpu()
    for name, ids in (("pred", pred), ("target", target)):
        if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
            raise ConfigError(
                f"{name} holds class ids outside [0, {num_classes}) "
                f"(min {int(ids.min())}, max {int(ids.max())}); pass the right num_classes "
                "or an ignore_index for the label to skip"
            )
    flat = target * num_classes + pred  # one bin per (true, predicted) pair
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def overall_accuracy(cm: Tensor) -> float:
    """Fraction of correct predictions, ``trace / total`` (NaN for an empty matrix)."""
    total = cm.sum()
    return float(cm.diagonal().sum() / total) if total > 0 else float("nan")


def _present(cm: Tensor) -> Tensor:
    # Classes seen as a target or a prediction; the others have 0/0 scores.
    return (cm.sum(0) + cm.sum(1)) > 0


def per_class_f1(cm: Tensor) -> Tensor:
    """F1 = 2·TP / (2·TP + FP + FN) per class, float64 ``(C,)``; NaN for absent classes."""
    cm = cm.double()
    tp = cm.diagonal()
    denom = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)
    return torch.where(_present(cm), 2 * tp / denom.clamp_min(1), torch.nan)


def per_class_iou(cm: Tensor) -> Tensor:
    """IoU (Jaccard) = TP / (TP + FP + FN) per class, float64 ``(C,)``; NaN for absent classes."""
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(_present(cm), tp / union.clamp_min(1), torch.nan)


def macro_f1(cm: Tensor) -> float:
    """Unweighted mean of :func:`per_class_f1` over the classes present."""
    return float(per_class_f1(cm).nanmean())


def miou(cm: Tensor) -> float:
    """Unweighted mean of :func:`per_class_iou` over the classes present."""
    return float(per_class_iou(cm).nanmean())


def rmse(pred: Tensor, target: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Root mean squared error, reduced over ``dim`` (all dims when None).

    Args:
        pred: any shape.
        target: same shape as ``pred``.
        dim: dims to average over; the others are kept (e.g. ``dim=(0, 2)`` on ``(N, I, H)``
            gives one value per index).

    Returns:
        float64 tensor of the remaining dims (a 0-d tensor when ``dim`` is None).
    """
    _same_shape(pred, target)
    err = (pred.double() - target.double()).square()
    return (err.mean() if dim is None else err.mean(dim)).sqrt()


def mae(pred: Tensor, target: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean absolute error, reduced over ``dim`` like :func:`rmse`."""
    _same_shape(pred, target)
    err = (pred.double() - target.double()).abs()
    return err.mean() if dim is None else err.mean(dim)


def _same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ConfigError(
            f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
        )
