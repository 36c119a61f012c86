"""Inference time of the pixel classifier with and without BatchNorm folded into its convs.

For each backbone (default ``small_cnn`` and ``resnet18``, ``model.small_input`` as in
params.yaml) a random-weight pixel classifier (speed does not depend on the values) predicts
``--n`` recurrence plots ``(I, S, S)`` in one batch, on one torch thread, under ``no_grad`` as
``pimc predict`` runs it. Two forms are timed: the eager module and the ``torch.export`` program
that the finetune flow registers (``program.module()``, as MLflow's pt2 flavour loads it). The
unfolded and folded runs alternate, so load from other processes hits both alike.

Printed: median seconds per 1024 samples over ``--repeats`` runs (after one warm-up run), the
folded / unfolded ratio and the max abs difference of their outputs. Nothing is asserted; this
only measures. Usage::

    python benchmarks/fold.py --backbones small_cnn resnet18 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from pimc.core.config import ModelConfig  # noqa: E402
from pimc.models.fold import fold_batchnorm  # noqa: E402
from pimc.tasks.common import TaskModel, tower_backbone  # noqa: E402


def classifier(backbone: str, indices: int, classes: int) -> TaskModel:
    """A pixel classifier as pixel_cls builds it, with BN statistics moved off their init."""
    torch.manual_seed(0)
    cfg = ModelConfig(rp_backbone=backbone)
    model = TaskModel(tower_backbone(None, "rp_encoder", indices, cfg), classes)
    with torch.no_grad():
        model.train()(torch.rand(64, indices, 8, 8))
    return model.eval()


def exported(model: torch.nn.Module, x: torch.Tensor) -> Callable:
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},)).module()


def seconds(fn: Callable, x: torch.Tensor) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        fn(x)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["small_cnn", "resnet18"])
    parser.add_argument("--n", type=int, default=1024, help="samples per timed forward")
    parser.add_argument("--size", type=int, default=32, help="RP side S (recurrence.size)")
    parser.add_argument("--indices", type=int, default=3, help="RP channels I")
    parser.add_argument("--classes", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--forms", nargs="+", default=["eager", "pt2"], choices=["eager", "pt2"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(args.n, args.indices, args.size, args.size)
    print(f"torch {torch.__version__}, 1 thread, input {tuple(x.shape)}, "
          f"median of {args.repeats} runs; seconds per 1024 samples")  # fmt: skip
    print(f"{'model':<12} {'form':<6} {'unfolded':>9} {'folded':>9} {'ratio':>7} {'max|diff|':>10}")
    for name in args.backbones:
        model = classifier(name, args.indices, args.classes)
        folded = fold_batchnorm(model)
        for form in args.forms:
            fns = (model, folded) if form == "eager" else (exported(model, x), exported(folded, x))
            with torch.no_grad():
                diff = float((fns[0](x) - fns[1](x)).abs().max())  # also the warm-up run
            times: tuple[list[float], list[float]] = ([], [])
            for _ in range(args.repeats):
                for fn, out in zip(fns, times, strict=True):
                    out.append(seconds(fn, x) * 1024 / args.n)
            plain, fast = (statistics.median(t) for t in times)
            print(f"{name:<12} {form:<6} {plain:>9.4f} {fast:>9.4f} {fast / plain:>7.3f} "
                  f"{diff:>10.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
