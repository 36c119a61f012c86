"""Benchmark pimc.transforms.recurrence.recurrence_plot against pyts.image.RecurrencePlot.

One run, one data set: index-like series (smooth random walks squashed to [-1, 1]) of shape
``(n, channels, t)``. Reports, for pimc on the full set and for both libraries on a common
subset (pyts only takes ``(n, T)``, so channels are flattened into series):

* recurrence plots per second and the pimc / pyts speed ratio (best of ``--repeats``, runs
  interleaved so that load from other processes hits both alike);
* output bandwidth, ``S*S*bytes_per_element * RPs/s``;
* peak memory above the starting point, next to the size of the output, to show that
  chunking keeps the working memory beyond the output bounded;
* the max abs difference to pyts in float64 (and of the ``--dtype`` run) on ``--check-n`` series;
* on CUDA, the fraction of ``--peak-gbps`` reached.

Page faults on the freshly allocated output dominate on CPU: numpy (so pyts) asks the kernel for
transparent huge pages on large arrays, torch only when ``THP_MEM_ALLOC_ENABLE=1`` is set in
the environment before it starts; the setting is printed.

Nothing is asserted; this only measures. Usage::

    python benchmarks/recurrence.py --n 100000 --t 61 --channels 3 --device cpu --dtype float32
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from pimc.transforms.recurrence import (  # noqa: E402
    DEFAULT_CHUNK_SIZE,
    recurrence_plot,
    resolve_embedding,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}


def load_pyts_recurrence_plot() -> type:
    """pyts' RecurrencePlot, loading only its module (``import pyts.image`` compiles every
    transform with numba, ~35 s); falls back to the public import."""
    import pyts

    path = Path(pyts.__file__).parent / "image" / "_recurrence.py"
    if path.is_file():
        spec = importlib.util.spec_from_file_location("_pyts_image_recurrence", path)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.RecurrencePlot
    from pyts.image import RecurrencePlot

    return RecurrencePlot


def make_series(n: int, channels: int, t: int, seed: int) -> torch.Tensor:
    """Index-like float64 series, shape ``(n, channels, t)``, values in (-1, 1)."""
    gen = torch.Generator().manual_seed(seed)
    walk = torch.randn(n, channels, t, generator=gen, dtype=torch.float64).cumsum(-1) * 0.15
    return torch.tanh(walk + 0.3)


class PeakMemory:
    """Host (RSS high-water mark) or CUDA peak memory of a block, in bytes above its start."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self.method = ""

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        try:  # Linux: writing 5 resets VmHWM to the current RSS, so the peak is this block's
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.start = self._status("VmRSS")
            self.method = "VmHWM after clear_refs"
        except OSError:
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "ru_maxrss delta (only grows; later blocks may read 0)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        elif self.method.startswith("VmHWM"):
            self.peak = self._status("VmHWM") - self.start
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.start


def prefault(n_bytes: int) -> None:
    """Touch ``n_bytes`` of fresh memory once, then free it.

    In a VM the first touch of a guest page can cost ~10x a normal page fault (the host backs
    it lazily); whichever library ran first would pay that. Touching the memory both will use
    beforehand makes the comparison about the libraries, not about run order.
    """
    buf = torch.empty(max(n_bytes, 0) // 8 + 1, dtype=torch.float64)
    buf.fill_(0.0)
    del buf
    gc.collect()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.3f} GB"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="pixels (series per channel)")
    p.add_argument("--t", type=int, default=61, help="dates per series")
    p.add_argument("--channels", type=int, default=3, help="indices per pixel")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--dimension", type=float, default=1, help="embedding dimension m")
    p.add_argument("--time-delay", type=float, default=1, help="time delay tau")
    p.add_argument("--threshold", default="none", help="none, point, distance or a float")
    p.add_argument("--percentage", type=float, default=10.0)
    p.add_argument("--normalize", action="store_true", help="full-set run only (pipeline)")
    p.add_argument("--size", type=int, default=None, help="full-set run only: resize plots")
    p.add_argument("--out-dtype", default=None, choices=sorted(DTYPES), help="full-set run only")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    p.add_argument("--pyts-n", type=int, default=30_000, help="series in the common subset")
    p.add_argument("--check-n", type=int, default=2_000, help="series for the accuracy check")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs on the subset")
    p.add_argument("--peak-gbps", type=float, default=None, help="device memory bandwidth")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _int_if_whole(value: float) -> int | float:
    # argparse gives floats; pyts treats 1 (int) and 1.0 (fraction of T) differently.
    return int(value) if float(value).is_integer() and value >= 1 else value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    m, tau = _int_if_whole(args.dimension), _int_if_whole(args.time_delay)
    threshold: float | str | None = args.threshold
    if threshold == "none":
        threshold = None
    elif threshold not in ("point", "distance"):
        threshold = float(threshold)
    rp_kw = dict(dimension=m, time_delay=tau, threshold=threshold, percentage=args.percentage)
    # Options pyts does not have apply to the full-set run only (e.g. the pipeline's
    # normalize + size 32 + float16); the comparison with pyts always uses plain plots.
    full_kw = dict(
        rp_kw,
        normalize=args.normalize,
        size=args.size,
        dtype=DTYPES[args.out_dtype] if args.out_dtype else None,
        chunk_size=args.chunk_size,
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device={device}, "
        f"n={args.n} channels={args.channels} t={args.t} dtype={args.dtype} m={m} tau={tau} "
        f"threshold={threshold} percentage={args.percentage} chunk_size={args.chunk_size}"
    )
    # numpy (hence pyts) madvises huge pages for big arrays; torch only does with this set.
    print(f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    extras = {k: full_kw[k] for k in ("normalize", "size", "dtype")}
    print(f"full-set run extras: {extras}")
    data64 = make_series(args.n, args.channels, args.t, args.seed)
    x = data64.to(device=device, dtype=dtype)
    n_rp = args.n * args.channels
    m_res, tau_res, side = resolve_embedding(args.t, m, tau)
    n_sub = min(args.pyts_n, n_rp)
    if device.type == "cpu":
        # pimc's full output, or pyts' float64 distances + its float64 astype copy.
        prefault(max(n_rp * side * side * dtype.itemsize, 2 * n_sub * side * side * 8))
    print(f"resolved m={m_res} tau={tau_res}: {side}x{side} plots")

    # --- pimc on the full set --------------------------------------------------------------
    recurrence_plot(x[:64], **full_kw)  # warm-up (threads, kernels)
    with PeakMemory(device) as mem:
        dt, out = timed(lambda: recurrence_plot(x, **full_kw), device)
    out_bytes = out.numel() * out.element_size()
    rate = n_rp / dt
    out_side = out.shape[-1]
    rp_bytes = out_side * out_side * out.element_size()
    print(f"\n[pimc, full set] {n_rp} RPs of {out_side}x{out_side} {out.dtype} in {dt:.3f} s")
    print(f"  {rate:,.0f} RPs/s, output bandwidth {rate * rp_bytes / 1e9:.2f} GB/s")
    if args.peak_gbps:
        print(f"  = {100 * rate * rp_bytes / 1e9 / args.peak_gbps:.1f}% of {args.peak_gbps} GB/s")
    print(
        f"  peak memory +{gb(mem.peak)} for a {gb(out_bytes)} output: working memory beyond the "
        f"output {gb(max(mem.peak - out_bytes, 0))} ({mem.method})"
    )
    del out
    gc.collect()

    # --- pimc vs pyts on a common subset ---------------------------------------------------
    start = time.perf_counter()
    pyts_rp_cls = load_pyts_recurrence_plot()
    print(f"\npyts loaded in {time.perf_counter() - start:.1f} s")
    pyts_rp = pyts_rp_cls(**rp_kw)
    flat = x.reshape(n_rp, args.t)[:n_sub]
    flat_np = flat.cpu().numpy()  # pyts' input: the same values, (n, T)
    pyts_rp.transform(flat_np[:16])  # warm-up: numba threading layer
    times: dict[str, list[float]] = {"pimc": [], "pyts": []}
    peaks: dict[str, int] = {}
    for _ in range(max(args.repeats, 1)):
        for name in ("pimc", "pyts"):
            if name == "pimc":
                fn = lambda: recurrence_plot(flat, **rp_kw, chunk_size=args.chunk_size)  # noqa: E731
            else:
                fn = lambda: pyts_rp.transform(flat_np)  # noqa: E731
            with PeakMemory(device if name == "pimc" else torch.device("cpu")) as mem:
                dt, res = timed(fn, device)
            times[name].append(dt)
            peaks[name] = max(peaks.get(name, 0), mem.peak)
            del res
            gc.collect()
    pimc_rate = n_sub / min(times["pimc"])
    pyts_rate = n_sub / min(times["pyts"])
    elem = {"pimc": dtype.itemsize if dtype != torch.float64 else 8, "pyts": 8}
    print(f"[subset] {n_sub} series, best of {len(times['pimc'])} interleaved runs")
    for name, r in (("pimc", pimc_rate), ("pyts", pyts_rate)):
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        out_b = n_sub * side * side * elem[name]
        print(
            f"  {name}: {r:,.0f} RPs/s ({runs} s), output {r * side * side * elem[name] / 1e9:.2f}"
            f" GB/s, peak +{gb(peaks[name])} for a {gb(out_b)} output"
        )
    print(f"  speed ratio pimc/pyts on the subset: {pimc_rate / pyts_rate:.2f}x")
    print(f"  speed ratio pimc (full set) / pyts (subset), per series: {rate / pyts_rate:.2f}x")

    # --- accuracy ---------------------------------------------------------------------------
    n_chk = min(args.check_n, n_rp)
    chk64 = data64.reshape(n_rp, args.t)[:n_chk]
    ref = pyts_rp.transform(chk64.numpy())
    ours64 = recurrence_plot(chk64.to(device), **rp_kw).cpu().numpy()
    ours_dt = recurrence_plot(x.reshape(n_rp, args.t)[:n_chk], **rp_kw).double().cpu().numpy()
    print(f"\n[accuracy] {n_chk} series vs pyts (float64 reference)")
    print(f"  max |pimc float64 - pyts| = {np.abs(ours64 - ref).max():.3e}")
    print(f"  max |pimc {args.dtype} - pyts| = {np.abs(ours_dt - ref).max():.3e} (input rounding)")
    if threshold is not None:  # rounding the input flips entries that sit at the threshold
        print(f"  entries differing in the {args.dtype} run: {np.mean(ours_dt != ref):.2e}")


if __name__ == "__main__":
    main()
