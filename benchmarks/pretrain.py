"""Throughput of the pretraining input pipeline and of a full training step.

Measures, in samples per second, on prepared (+ optionally materialized RP) data:

* ``per-item``: a classic ``DataLoader(dataset, batch_size, shuffle=True)`` over
  ``PairDataset.__getitem__`` with ``default_collate`` (the baseline the batched path replaces);
* ``pipeline/materialized`` and ``pipeline/on_the_fly``: what :func:`pimc.stages.pretrain.pretrain`
  does per batch before the model: ``get_batch`` + :func:`batch_rps` (RPs built from the series
  on ``--device`` for on-the-fly) + normalisation + flips/rotations + channel dropout;
* ``model step``: forward + backward + AdamW on one pre-built batch (no data work);
* ``train step``: pipeline + model step, as in the training loop.

Each figure is the best (and median) of ``--repeats`` rounds of ``--steps`` calls, the rounds
interleaved across figures, so that bursts of load from other processes hit all alike. Nothing
is asserted; this only measures. Usage::

    python benchmarks/pretrain.py --prepared data/prepared --rp data/recurrence \\
        --batch-size 128 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from pimc.core.config import ModelConfig, RecurrenceConfig  # noqa: E402
from pimc.models.build import build_model  # noqa: E402
from pimc.training.losses import SymmetricInfoNCE  # noqa: E402
from pimc.training.pairs import PairDataset, augment_images, batch_rps, channel_dropout  # noqa: E402
from pimc.training.utils import (  # noqa: E402
    AUGMENT,
    autocast,
    epoch_batches,
    make_generator,
    resolve_device,
)


def rate(fn: Callable[[int], object], steps: int, batch_size: int) -> float:
    """Samples per second of ``fn(i)`` over ``steps`` calls."""
    start = time.perf_counter()
    for i in range(steps):
        fn(i)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--rp", default="data/recurrence", help="materialized RP folder")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="calls per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--rp-size", type=int, default=32, help="recurrence.size (on the fly)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--channel-dropout", type=float, default=0.1)
    parser.add_argument("--deterministic", action="store_true", help="as pretrain does on CPU")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.use_deterministic_algorithms(args.deterministic)
    rcfg = RecurrenceConfig(size=args.rp_size)
    bs = args.batch_size
    pairs = {
        "materialized": PairDataset(args.prepared, args.folds, rp_dir=args.rp),
        "on_the_fly": PairDataset(args.prepared, args.folds, recurrence_cfg=rcfg),
    }
    n = len(pairs["materialized"])
    batches = epoch_batches(n, bs, epoch=0, seed=0)
    mean, std = pairs["materialized"].image_stats()
    m, s = mean.to(device)[:, None, None], std.to(device)[:, None, None]
    print(
        f"{n} pairs, batch {bs}, {args.repeats} x {args.steps} steps, device {device}, "
        f"{torch.get_num_threads()} threads, deterministic={args.deterministic}"
    )

    def pipeline(source: str) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        def run(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            gen = make_generator(0, AUGMENT, i)
            batch = pairs[source].get_batch(batches[i % len(batches)], generator=gen)
            rp = channel_dropout(batch_rps(batch, rcfg, device), args.channel_dropout, gen)
            image = augment_images((batch["image"].to(device) - m) / s, gen)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return rp, image

        return run

    loader = DataLoader(pairs["materialized"], batch_size=bs, shuffle=True, drop_last=True)
    items = iter(loader)

    def per_item(i: int) -> None:
        nonlocal items
        try:
            next(items)
        except StopIteration:
            items = iter(loader)
            next(items)

    model = build_model(ModelConfig(), pairs["materialized"].rp_channels, 10).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = SymmetricInfoNCE()
    fixed = pipeline("materialized")(0)

    def model_step(rp: torch.Tensor, image: torch.Tensor) -> None:
        with autocast(device):
            out = model(rp, image)
        loss = criterion(
            out["pixel_features"].float(), out["image_features"].float(), out["logit_scale"].float()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    bench: dict[str, Callable[[int], object]] = {"per-item DataLoader (materialized)": per_item}
    for source in pairs:
        bench[f"pipeline/{source}"] = pipeline(source)
    bench["model step (fixed batch)"] = lambda i: model_step(*fixed)
    for source in pairs:
        make = pipeline(source)
        bench[f"train step/{source}"] = lambda i, f=make: model_step(*f(i))
    for fn in bench.values():  # warm-up: allocator, oneDNN kernel selection
        fn(0)
    rates: dict[str, list[float]] = {name: [] for name in bench}
    for _ in range(args.repeats):
        for name, fn in bench.items():
            rates[name].append(rate(fn, args.steps, bs))
    width = max(map(len, rates))
    print(f"{'':<{width}}  {'best':>10}  {'median':>10}  samples/s")
    for name, values in rates.items():
        print(f"{name:<{width}}  {max(values):10.0f}  {statistics.median(values):10.0f}")


if __name__ == "__main__":
    main()
