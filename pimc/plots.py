"""Figures people would rather see than read (matplotlib, Agg backend, PNG, written atomically)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from pimc.core.errors import InputError
from pimc.core.io import atomic_path

DPI = 110  # PNG pixels per figure inch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: stages run under DVC/Prefect without a display
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and release it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    _pyplot().close(fig)
    return Path(path)


def rp_gallery(
    means: Mapping[int, np.ndarray],
    index_names: Sequence[str],
    class_names: Sequence[str],
    path: str | Path,
) -> Path:
    """Mean recurrence plot per class: one row per index, one column per class.

    Args:
        means: class id -> mean plot (I, S, S).
        index_names: names of the I channels (rows).
        class_names: names of all class ids (column titles).
        path: PNG to write.

    Raises:
        InputError: no class, a plot not ``(I, S, S)``, or a class id without a name.
    """
    if not means:
        raise InputError("rp_gallery: means is empty; give at least one class's mean plot")
    for label, mean in means.items():
        if np.ndim(mean) != 3 or len(mean) != len(index_names):
            raise InputError(
                f"rp_gallery: class {label}'s plot has shape {np.shape(mean)}; expected "
                f"(I={len(index_names)}, S, S), one plot per index name"
            )
        if not 0 <= label < len(class_names):
            raise InputError(f"rp_gallery: class id {label} has no name in class_names")
    plt = _pyplot()
    classes = sorted(means)
    rows, cols = len(index_names), len(classes)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1, 1.6 * rows + 0.6), squeeze=False)
    for c, label in enumerate(classes):
        for r, name in enumerate(index_names):
            ax = axes[r][c]
            ax.imshow(means[label][r], cmap="viridis", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(class_names[label][:14], fontsize=7)
            if c == 0:
                ax.set_ylabel(name.upper(), fontsize=8)
    fig.suptitle("Mean recurrence plot per class", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def learning_curves(
    train: Sequence[Mapping[str, float]],
    val: Sequence[Mapping[str, float]],
    path: str | Path,
    title: str = "Training",
) -> Path:
    """Loss per step (train) and per epoch (val), plus every other ``val/*`` metric.

    Args:
        train: rows with ``step`` and ``train/loss``.
        val: rows with ``step``, ``val/loss`` and other ``val/...`` metrics.
        path: PNG to write.
    """
    plt = _pyplot()
    extra = sorted({k for row in val for k in row if k.startswith("val/") and k != "val/loss"})
    fig, axes = plt.subplots(1, 1 + bool(extra), figsize=(5 + 4 * bool(extra), 3.4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot([r["step"] for r in train], [r["train/loss"] for r in train], lw=0.8, label="train")
    if val:
        ax.plot([r["step"] for r in val], [r["val/loss"] for r in val], "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    if extra:
        ax2 = axes[0][1]
        for key in extra:
            ax2.plot([r["step"] for r in val], [r[key] for r in val], "o-", label=key)
        ax2.set_xlabel("step")
        ax2.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def task_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]], metric: str, path: Path, title: str
) -> Path:
    """Training loss and validation ``metric`` per epoch, one line per method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, rows in curves.items():
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r["train/loss"] for r in rows], label=method)
        axes[1].plot(epochs, [r[metric] for r in rows], "o-", ms=3, label=method)
    axes[0].set(xlabel="epoch", ylabel="train loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel=metric)
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_matrix(cm: Tensor, names: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (recall per true class) with the counts written in.

    Args:
        cm: ``(K, K)`` counts, rows true and columns predicted classes.
        names: the K class names.
        path: PNG to write.
        title: figure title.

    Raises:
        InputError: ``cm`` is not ``(K, K)`` with ``K = len(names)``.
    """
    if tuple(cm.shape) != (len(names), len(names)):
        raise InputError(
            f"confusion_matrix: cm has shape {tuple(cm.shape)}; expected "
            f"({len(names)}, {len(names)}), one row and column per class name"
        )
    plt = _pyplot()
    counts = cm.double().numpy()
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(names)
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * n, 2 + 0.45 * n))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for t, p in zip(*np.nonzero(counts), strict=True):
        color = "white" if rates[t, p] > 0.5 else "black"
        ax.text(p, t, f"{int(counts[t, p])}", ha="center", va="center", fontsize=6, c=color)
    short = [s[:18] for s in names]
    ax.set_xticks(range(n), short, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="recall")
    fig.tight_layout()
    return save_figure(fig, path)


def class_colors(n: int = 20) -> dict[int, tuple[int, int, int, int]]:
    """One RGBA colour (0-255) per class id, shared by PNG previews and GeoTIFF colormaps."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return {k: tuple(int(round(255 * c)) for c in cmap(k % 20)) for k in range(n)}


def class_map(classes: np.ndarray, names: Mapping[int, str], path: str | Path, title: str) -> Path:
    """A predicted class map ``(H, W)`` of class ids, with a legend of the classes present.

    Raises:
        InputError: ``classes`` is not 2-D.
    """
    if np.ndim(classes) != 2:
        raise InputError(f"class_map: classes has shape {np.shape(classes)}; expected (H, W)")
    plt = _pyplot()
    from matplotlib.patches import Patch

    colors = class_colors()
    rgba = np.zeros((*classes.shape, 4))
    present = [int(k) for k in np.unique(classes) if int(k) in names]
    for k in present:
        rgba[classes == k] = np.asarray(colors[k]) / 255
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    handles = [Patch(color=np.asarray(colors[k]) / 255, label=f"{k} {names[k]}") for k in present]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def forecast_maps(
    forecast: np.ndarray, index_names: Sequence[str], steps: Sequence[str], path: str | Path
) -> Path:
    """Forecast ``(I, H_steps, H, W)``: one row per index, first and last forecast step.

    Raises:
        InputError: ``forecast`` is not ``(I, H_steps, H, W)`` with ``I = len(index_names)``.
    """
    if np.ndim(forecast) != 4 or len(forecast) != len(index_names) or not forecast.shape[1]:
        raise InputError(
            f"forecast_maps: forecast has shape {np.shape(forecast)}; expected "
            f"(I={len(index_names)}, H_steps >= 1, H, W)"
        )
    plt = _pyplot()
    n_idx, horizon = forecast.shape[:2]
    picks = sorted({0, horizon - 1})
    fig, axes = plt.subplots(n_idx, len(picks), figsize=(3.2 * len(picks), 2.8 * n_idx))
    axes = np.atleast_2d(axes).reshape(n_idx, len(picks))
    for i in range(n_idx):
        for j, step in enumerate(picks):
            image = axes[i, j].imshow(forecast[i, step], cmap="YlGn", vmin=-0.2, vmax=1.0)
            label = steps[step] if step < len(steps) else f"t+{step + 1}"
            axes[i, j].set_title(f"{index_names[i]} {label}", fontsize=8)
            axes[i, j].set_axis_off()
    fig.colorbar(image, ax=axes, fraction=0.03)
    return save_figure(fig, path)


def forecast_examples(
    x: Tensor,
    y: Tensor,
    preds: dict[str, Tensor],
    std: Tensor,
    mean: Tensor,
    names: list[str],
    highlight: str,
    path: Path,
    n: int = 4,
) -> Path:
    """True vs predicted curves of ``n`` test pixels (rows) per index (columns), in index units.

    Args:
        x: ``(N, I, T)`` inputs; y: ``(N, I, H)`` truth; preds: method -> ``(N, I, H)``
            standardised forecasts; std/mean: ``(I,)``; highlight: the method drawn boldest.
    """
    plt = _pyplot()
    rows = np.linspace(0, len(x) - 1, min(n, len(x))).round().astype(int)  # spread, repeatable
    t_in, t_out = np.arange(x.shape[-1]), np.arange(x.shape[-1], x.shape[-1] + y.shape[-1])
    fig, axes = plt.subplots(
        len(rows), len(names), figsize=(3.2 * len(names), 2.1 * len(rows)), squeeze=False
    )
    for r, px in enumerate(rows):
        for i, name in enumerate(names):
            ax = axes[r][i]
            ax.plot(t_in, x[px, i], "k-", lw=1, label="input")
            ax.plot(t_out, y[px, i], "k--", lw=1.2, label="truth")
            for method, pred in preds.items():
                curve = pred[px, i] * std[i] + mean[i]
                bold = method == highlight
                ax.plot(t_out, curve, lw=2 if bold else 0.8, alpha=1 if bold else 0.6, label=method)
            ax.set_title(f"pixel {px} - {name.upper()}", fontsize=8)
            ax.tick_params(labelsize=6)
    axes[0][-1].legend(fontsize=6, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("grid step", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def label_efficiency(summary, rows, path: str | Path) -> Path:
    """One panel per task: the headline test metric (mean ± sd over seeds) against the share
    of training labels, one line per method.

    Args:
        summary: DataFrame with ``task``, ``label_fraction``, ``method``, ``mean``, ``sd``.
        rows: The per-seed rows (for each task's ``headline`` and ``higher_is_better``).
        path: The PNG to write.
    """
    plt = _pyplot()
    tasks = list(dict.fromkeys(summary["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        head = rows[rows["task"] == task].iloc[0]
        for method, m in summary[summary["task"] == task].groupby("method", sort=True):
            m = m.sort_values("label_fraction")
            style = "-" if method.startswith("pimc") else "--"
            ax.errorbar(
                m["label_fraction"], m["mean"], yerr=m["sd"].fillna(0), fmt=style, marker="o",
                capsize=3, label=method,
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("share of training labels")
        arrow = "↑" if head["higher_is_better"] else "↓"
        ax.set_ylabel(f"test {head['headline']} {arrow}")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Label efficiency, mean ± sd over {rows['seed'].nunique()} seeds")
    fig.tight_layout()
    return save_figure(fig, path)
