"""Choosing pixels in a patch, cutting image windows around them, and picking the patch date(s).

:func:`sample_pixels` (numpy) picks the pixels whose time series become recurrence plots;
:func:`extract_patches` (pure torch, any device and dtype) cuts the matching image windows;
:func:`composite` (pure torch) reduces the time axis of a patch to the date(s) those windows
are cut from. :func:`hilbert_index` / :func:`hilbert_coords` implement the classic Hilbert
curve mapping used by the ``"hilbert"`` sampler.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from pimc.core.errors import ConfigError, InputError

__all__ = [
    "COMPOSITE_MODES",
    "SAMPLING_METHODS",
    "composite",
    "extract_patches",
    "hilbert_coords",
    "hilbert_index",
    "sample_pixels",
]

SAMPLING_METHODS = ("random", "stratified", "hilbert")
COMPOSITE_MODES = ("fixed", "median", "random")


def hilbert_index(rows: np.ndarray, cols: np.ndarray, order: int) -> np.ndarray:
    """Position along the Hilbert curve of side ``2**order`` (classic ``xy2d``), vectorised.

    Convention: ``x = col``, ``y = row``; the curve starts at (row 0, col 0) and ends at
    (row 0, col ``2**order - 1``). For ``order = 1``: (0,0)→0, (1,0)→1, (1,1)→2, (0,1)→3 as
    (row, col). Consecutive indices are always 4-neighbours.

    Args:
        rows: Integer array of row coordinates in ``[0, 2**order)``.
        cols: Integer array of column coordinates, same shape as ``rows``.
        order: Curve order ≥ 0.

    Returns:
        int64 array shaped like ``rows`` with values in ``[0, 4**order)``.

    Raises:
        InputError: ``rows`` and ``cols`` differ in shape or leave the ``2**order`` square.
    """
    x = np.array(cols, dtype=np.int64, copy=True)
    y = np.array(rows, dtype=np.int64, copy=True)
    side = 1 << order
    if x.shape != y.shape:
        raise InputError(f"rows {y.shape} and cols {x.shape} must have the same shape")
    if x.size and (min(x.min(), y.min()) < 0 or max(x.max(), y.max()) >= side):
        raise InputError(f"coordinates must lie in [0, {side}) for order={order}; raise `order`")
    d = np.zeros_like(x)
    s = side // 2
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        x, y = _rotate(side, x, y, rx, ry)
        s //= 2
    return d


def hilbert_coords(d: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`hilbert_index` (classic ``d2xy``): curve positions → ``(rows, cols)``.

    Args:
        d: Integer array of positions in ``[0, 4**order)``.
        order: Curve order ≥ 0.

    Returns:
        ``(rows, cols)`` int64 arrays shaped like ``d``.
    """
    t = np.array(d, dtype=np.int64, copy=True)
    side = 1 << order
    x, y = np.zeros_like(t), np.zeros_like(t)
    s = 1
    while s < side:
        rx = (t // 2) & 1
        ry = (t ^ rx) & 1
        x, y = _rotate(s, x, y, rx.astype(bool), ry.astype(bool))
        x += s * rx
        y += s * ry
        t //= 4
        s *= 2
    return y, x


def _rotate(n: int, x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray):
    """Rotate/flip each quadrant so that the sub-curve has the right orientation."""
    flip = ~ry & rx
    x = np.where(flip, n - 1 - x, x)
    y = np.where(flip, n - 1 - y, y)
    swap = ~ry
    return np.where(swap, y, x), np.where(swap, x, y)


def _balanced_counts(caps: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``n`` draws over classes as evenly as their sizes ``caps`` allow (water-filling).

    Classes that cannot fill their share hand the shortfall to the others; the last ``< m``
    draws go to distinct random classes, so uncapped counts differ by at most one.
    """
    alloc = np.zeros_like(caps)
    remaining = min(n, int(caps.sum()))
    while remaining > 0:
        active = np.flatnonzero(alloc < caps)
        share = remaining // len(active)
        if share == 0:
            alloc[rng.choice(active, size=remaining, replace=False)] += 1
            break
        give = np.minimum(share, caps[active] - alloc[active])
        alloc[active] += give
        remaining -= int(give.sum())
    return alloc


def sample_pixels(
    mask: np.ndarray | Tensor,
    n: int,
    method: str,
    seed: int,
    *,
    exclude: Sequence[int] = (19,),
    per_class: int | None = None,
) -> np.ndarray:
    """Pick up to ``n`` distinct pixels of a patch whose label is not in ``exclude``.

    Methods:
        ``"random"``: uniform without replacement; returned in draw order.
        ``"stratified"``: as equal a number per class present as class sizes allow (a class
            too small for its share gives the rest to the others; the remainder goes to random
            distinct classes), uniform within each class; returned in random order.
        ``"hilbert"``: eligible pixels ordered along a Hilbert curve covering the patch, then
            ``k`` evenly spaced positions with a random offset — spatially well spread;
            returned in curve order.

    Numpy; deterministic for a given ``seed`` (``np.random.default_rng``).

    Args:
        mask: ``(H, W)`` integer labels (numpy or torch, any device).
        n: Number of pixels wanted, ≥ 0.
        method: One of :data:`SAMPLING_METHODS`.
        seed: Random seed.
        exclude: Labels never sampled (default: PASTIS void, 19).
        per_class: ``"stratified"`` only: at most this many pixels per class.

    Returns:
        ``(k, 2)`` int64 ``(row, col)`` array, ``k = min(n, eligible pixels)`` (for
        ``"stratified"`` with ``per_class``, also at most ``per_class`` × classes).

    Raises:
        ConfigError: unknown method, ``n < 0`` or ``per_class`` misuse.
        InputError: a non-2-D mask.
    """
    _check_sampling(n, method, per_class)
    labels = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if labels.ndim != 2:
        raise InputError(f"mask must be (H, W), got shape {labels.shape}")
    eligible = np.flatnonzero(~np.isin(labels, np.asarray(list(exclude))))
    rng = np.random.default_rng(seed)
    if method == "random":
        chosen = rng.choice(eligible, size=min(n, eligible.size), replace=False)
    elif method == "stratified":
        chosen = _stratified(eligible, labels.ravel()[eligible], n, per_class, rng)
    else:
        chosen = _hilbert(eligible, labels.shape, n, rng)
    chosen = np.asarray(chosen, dtype=np.int64)
    width = labels.shape[1]
    return np.stack([chosen // width, chosen % width], axis=1)


def _check_sampling(n: int, method: str, per_class: int | None) -> None:
    """Validate the :func:`sample_pixels` parameters (raises ConfigError)."""
    if method not in SAMPLING_METHODS:
        raise ConfigError(
            f"sampling method={method!r} is unknown; choose one of {SAMPLING_METHODS}"
        )
    if n < 0:
        raise ConfigError(f"n={n} pixels per patch must be ≥ 0")
    if per_class is not None and (method != "stratified" or per_class < 1):
        raise ConfigError(
            f"per_class={per_class} needs method='stratified' and a value ≥ 1; "
            "leave per_class=None otherwise"
        )


def _stratified(
    eligible: np.ndarray,
    eligible_labels: np.ndarray,
    n: int,
    per_class: int | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """``"stratified"``: flat indices of ``eligible`` pixels, balanced over their labels."""
    classes, sizes = np.unique(eligible_labels, return_counts=True)
    caps = sizes if per_class is None else np.minimum(sizes, per_class)
    counts = _balanced_counts(caps, n, rng)
    parts = [
        rng.choice(eligible[eligible_labels == c], size=int(k), replace=False)
        for c, k in zip(classes, counts, strict=True)
    ]
    chosen = np.concatenate([np.empty(0, np.int64), *parts])
    # Shuffle so that any prefix of the result is still class-balanced on average.
    return rng.permutation(chosen)


def _hilbert(
    eligible: np.ndarray, shape: tuple[int, int], n: int, rng: np.random.Generator
) -> np.ndarray:
    """``"hilbert"``: flat indices of ``eligible`` pixels evenly spaced along a Hilbert curve."""
    height, width = shape
    order = max(0, int(np.ceil(np.log2(max(height, width, 1)))))
    curve = hilbert_index(eligible // width, eligible % width, order)
    along = eligible[np.argsort(curve, kind="stable")]
    k = min(n, along.size)
    if k == 0:
        return along[:0]
    # Step ≥ 1 keeps positions distinct; the random offset varies the picks per seed.
    step = along.size / k
    pos = np.floor(rng.uniform(0, step) + step * np.arange(k)).astype(np.int64)
    return along[np.minimum(pos, along.size - 1)]


def _reflect(index: Tensor, size: int) -> Tensor:
    """numpy/torch ``reflect`` padding as an index map (edge not repeated); needs pad < size."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def extract_patches(image: Tensor, rows, cols, size: int) -> Tensor:
    """Square windows centred on pixels, reflect-padded at the patch border.

    Pure torch, any device and dtype. Rather than padding the whole image and gathering, the
    reflect padding is applied to the gather indices (identical to ``F.pad(mode="reflect")``),
    which saves the padded copy and also works for integer images.

    Args:
        image: ``(..., C, H, W)`` image; leading dims (e.g. time) are kept.
        rows: ``(N,)`` integer row coordinates (sequence, numpy or torch).
        cols: ``(N,)`` integer column coordinates.
        size: Odd window side.

    Returns:
        ``(N, ..., C, size, size)`` tensor on ``image``'s device; window ``i`` has
        ``image[..., rows[i], cols[i]]`` at its centre ``[size // 2, size // 2]``.

    Raises:
        ConfigError: even/non-positive ``size``, or a window larger than the patch.
        InputError: ``image`` of rank < 3, or bad coordinates.
    """
    if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
        raise ConfigError(f"patch size={size!r} must be an odd integer ≥ 1 (e.g. 9, 15)")
    if image.ndim < 3:
        raise InputError(f"image must be (..., C, H, W), got shape {tuple(image.shape)}")
    height, width = image.shape[-2:]
    half = int(size) // 2
    if half >= height or half >= width:
        raise ConfigError(
            f"window larger than the patch: size={size} needs H and W > {half} for reflect "
            f"padding, patch is {height}×{width}; lower the patch size"
        )
    r, c = (
        torch.as_tensor(x if isinstance(x, Tensor) else np.asarray(x), device=image.device).long()
        for x in (rows, cols)
    )
    if r.ndim != 1 or r.shape != c.shape:
        raise InputError(f"rows {tuple(r.shape)} and cols {tuple(c.shape)} must be equal 1-D")
    if r.numel() and (r.min() < 0 or r.max() >= height or c.min() < 0 or c.max() >= width):
        raise InputError(f"rows/cols must lie inside the {height}×{width} patch")
    offsets = torch.arange(-half, half + 1, device=image.device)
    rr = _reflect(r[:, None] + offsets, height)  # (N, size)
    cc = _reflect(c[:, None] + offsets, width)
    windows = image[..., rr[:, :, None], cc[:, None, :]]  # (..., C, N, size, size)
    return windows.movedim(-3, 0).contiguous()


def composite(
    image: Tensor, mode: str, *, index: int = 0, seed: int | None = None, n: int = 1
) -> Tensor:
    """Reduce a patch time series to the date(s) the image windows are cut from.

    Modes:
        ``"fixed"``: ``image[index]`` (negative indices count from the end).
        ``"median"``: per-pixel, per-band temporal median — robust to clouds; NaN dates are
            ignored; with an even count the lower median is taken, so values are observed ones.
        ``"random"``: ``n`` dates drawn with ``np.random.default_rng(seed)``, without
            replacement (with replacement when ``n > T``), in draw order.

    Pure torch (numpy only for the date draw).

    Args:
        image: ``(T, C, H, W)`` patch.
        mode: One of :data:`COMPOSITE_MODES`.
        index: Date for ``"fixed"``.
        seed: Seed for ``"random"`` (``None``: fresh entropy, not reproducible).
        n: Number of dates for ``"random"``, ≥ 1.

    Returns:
        ``(C, H, W)`` for ``"fixed"``/``"median"``, ``(n, C, H, W)`` for ``"random"``.

    Raises:
        ConfigError: unknown mode, ``index`` out of range or ``n < 1``.
        InputError: ``image`` not ``(T, C, H, W)`` with ``T ≥ 1``.
    """
    if mode not in COMPOSITE_MODES:
        raise ConfigError(f"composite mode={mode!r} is unknown; choose one of {COMPOSITE_MODES}")
    if image.ndim != 4 or image.shape[0] == 0:
        raise InputError(f"image must be (T, C, H, W) with T ≥ 1, got {tuple(image.shape)}")
    n_t = image.shape[0]
    if mode == "fixed":
        if not -n_t <= index < n_t:
            raise ConfigError(f"index={index} is out of range for T={n_t} dates; use -T..T-1")
        return image[index]
    if mode == "median":
        reduce = torch.nanmedian if image.is_floating_point() else torch.median
        return reduce(image, dim=0).values
    if n < 1:
        raise ConfigError(f"n={n} dates for composite mode='random' must be ≥ 1")
    picks = np.random.default_rng(seed).choice(n_t, size=n, replace=n > n_t)
    return image[torch.as_tensor(picks, dtype=torch.long, device=image.device)]
