"""Scene prediction at growing scene sizes: peak memory must not grow with the scene.

For each side (default 256, 512, 1024 px) a scene of per-date GeoTIFFs is built by tiling a
synthetic PASTIS patch, and a (random-weight: speed and memory do not depend on training)
model of each ``--tasks`` registered in a temporary MLflow store predicts it, each measurement
in its own process so that its peak RSS is its own. With ``--observed V`` only the top-left
V x V px of every scene hold observations and the rest is nodata (a swath edge): every scene
then costs the same model work, and what its size adds (reads, part files, the COG with its
overviews) shows alone; ``px/s`` counts observed pixels.

* ``windowed``: ``pimc predict --scene`` (:func:`pimc.scene_predict.predict_scene`, 256-px
  windows into a COG);
* ``whole`` (the peer): the whole scene read into memory and predicted in one
  :func:`pimc.predict.predict_patch` call, as a patch is.

Printed: pixels per second, the process's peak RSS (MiB; and before predicting, with the model
loaded), and the ratio of peak RSS to the smallest scene's. Nothing is asserted; this only
measures. Usage::

    python benchmarks/scene.py --sides 256 512 1024 --dates 24 --window 256
    python benchmarks/scene.py --sides 512 1024 2048 4096 --observed 512 --modes windowed
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

MODELS = {"pixel_cls": "pimc-bench-classifier", "forecast": "pimc-bench-forecaster"}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_scene(root: Path, side: int, dates: int, observed: int | None = None) -> Path:
    """``dates`` per-date GeoTIFFs of ``side`` x ``side`` px, written a block of rows at a
    time (so building a big scene needs little memory either); with ``observed``, 0 (nodata)
    outside the top-left ``observed`` x ``observed`` px."""
    import rasterio
    from rasterio.transform import from_origin

    from pimc.core.bands import PASTIS_BANDS
    from pimc.data.synthetic import SyntheticSpec, write_synthetic
    from pimc.predict import read_patch

    spec = SyntheticSpec(
        seed=0, pastis_patches=1, patch_size=64, min_dates=dates, max_dates=dates,
        eurosat_per_class=5,
    )  # fmt: skip
    if not (root / "raw").is_dir():
        write_synthetic(root / "raw", spec, progress=False)
    patch = read_patch(next((root / "raw" / "PASTIS" / "DATA_S2").glob("S2_*.npy")))
    image = patch.image.numpy().round().astype(np.uint16)  # (T, 10, 64, 64)
    folder = root / f"scene{side}"
    folder.mkdir()
    profile = {"driver": "GTiff", "height": side, "width": side, "count": 10, "dtype": "uint16",
               "crs": "EPSG:32631", "transform": from_origin(500000, 5000000, 10, 10),
               "tiled": True, "blockxsize": 256, "blockysize": 256}  # fmt: skip
    reps = -(-side // 64)
    for t, date in enumerate(patch.dates):
        row = np.tile(image[t], (1, 1, reps))[:, :, :side]  # (10, 64, side)
        with rasterio.open(folder / f"{date}.tif", "w", **profile) as dst:
            for b, band in enumerate(PASTIS_BANDS, start=1):
                dst.set_band_description(b, band)
            for r in range(0, side, 64):
                block = row[:, : min(64, side - r)].copy()
                if observed is not None:  # nodata below and right of the observed block
                    block[:, max(observed - r, 0) :] = 0
                    block[:, :, observed:] = 0
                window = rasterio.windows.Window(0, r, side, block.shape[1])
                dst.write(block, window=window)
    return folder


def register(tasks: list[str]) -> None:
    """A random-weight deployed model of each task in the tracking store of the environment."""
    import torch

    from pimc import tracking
    from pimc.core.config import Params, PrepareConfig
    from pimc.data.pastis import PASTIS
    from pimc.tasks.common import TaskModel, tower_backbone
    from pimc.tasks.forecast import Forecaster
    from pimc.tasks.registry import TASKS

    params = Params(prepare=PrepareConfig())
    channels, size = len(params.prepare.indices), params.recurrence.size or 32
    rp = torch.rand(4, channels, size, size)
    backbone = tower_backbone(None, "rp_encoder", channels, params.model)
    for task in tasks:
        if task == "pixel_cls":
            ids = list(range(10))
            result = {"class_ids": ids, "class_names": [PASTIS.classes[i] for i in ids]}
            model, example = TaskModel(backbone, len(ids)), rp
        else:
            result, cfg = {}, params.finetune.forecast
            zeros, ones = torch.zeros(channels), torch.ones(channels)
            model = Forecaster(backbone, channels, cfg.horizon, zeros, ones, rp_input=True)
            example = Forecaster.pack(rp, torch.rand(4, channels, cfg.context_steps))
        meta = TASKS[task].metadata(params, result)
        with tracking.start_run("benchmark-scene", {}, experiment="benchmark-scene") as run:
            run.log_model(model.eval(), task, example.numpy(), MODELS[task], metadata=meta)
        tracking.set_alias(MODELS[task], "champion", tracking.latest_version(MODELS[task]))


def measure(
    task: str, mode: str, folder: Path, out: Path, window: int, observed: int | None
) -> dict[str, float]:
    """One measurement, in this process: seconds, observed px/s, and ru_maxrss before predicting
    (model loaded, scene opened) and at the end. Linux counts the parent's RSS at the fork in a
    child's ru_maxrss, so the first is a floor; a peak above it is this process's own."""
    from pimc.predict import Patch, load_deployed, predict_patch
    from pimc.scene import open_scene
    from pimc.scene_predict import predict_scene

    model, meta = load_deployed(MODELS[task])
    scene = open_scene(folder)
    start_rss, start = _rss_mib(), time.perf_counter()
    if mode == "windowed":
        predict_scene(model, meta, scene, out, window=window, progress=False)
    else:
        import rasterio

        files = {p: rasterio.open(p) for p, _ in scene.sources}
        window = rasterio.windows.Window(0, 0, scene.width, scene.height)
        image = scene.read(window, files)
        patch = Patch(image, scene.dates, patch_id=0, crs=scene.crs, transform=None)
        predict_patch(model, meta, patch, progress=False)
    seconds = time.perf_counter() - start
    pixels = min(observed or scene.height, scene.height) * min(observed or scene.width, scene.width)
    return {"seconds": seconds, "px_per_s": pixels / seconds, "start_rss_mib": start_rss,
            "peak_rss_mib": _rss_mib()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--dates", type=int, default=24)
    parser.add_argument("--tasks", nargs="+", default=["pixel_cls"], choices=list(MODELS))
    parser.add_argument("--modes", nargs="+", default=["windowed", "whole"])
    parser.add_argument("--window", type=int, default=256, help="windowed: window side (px)")
    parser.add_argument("--observed", type=int, help="only the top-left N x N px observed")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # task mode folder out
    args = parser.parse_args()
    if args.one:
        task, mode, folder, out = args.one
        print(json.dumps(measure(task, mode, Path(folder), Path(out), args.window, args.observed)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
               "PREFECT_HOME": str(root / "prefect")}  # fmt: skip
        os.environ.update(env)
        register(args.tasks)
        rows = []
        for side in args.sides:
            folder = build_scene(root, side, args.dates, args.observed)
            for task in args.tasks:
                for mode in args.modes:
                    rows.append({"side": side, "task": task, "mode": mode,
                                 **_one(task, mode, folder, root, args, env)})  # fmt: skip
                    print(f"{side:>5}^2 px  {task:<9} {mode:<8}  {rows[-1]['px_per_s']:>7,.0f} "
                          f"px/s  {rows[-1]['seconds']:>7.1f} s  peak RSS "
                          f"{rows[-1]['peak_rss_mib']:>7.1f} MiB (before predicting "
                          f"{rows[-1]['start_rss_mib']:.1f})", flush=True)  # fmt: skip
            shutil.rmtree(folder)
        for task in args.tasks:
            for mode in args.modes:
                mine = [r for r in rows if r["mode"] == mode and r["task"] == task]
                base = mine[0]["peak_rss_mib"]
                ratios = ", ".join(f"{r['side']}^2: x{r['peak_rss_mib'] / base:.2f}" for r in mine)
                print(
                    f"{task} {mode}: peak RSS relative to the {mine[0]['side']}^2 scene: {ratios}"
                )


def _one(task: str, mode: str, folder: Path, root: Path, args, env) -> dict[str, float]:
    """:func:`measure` in a fresh process (its own peak RSS)."""
    cmd = [sys.executable, __file__, "--one", task, mode, str(folder), str(root / "m.tif"),
           "--window", str(args.window)]  # fmt: skip
    cmd += ["--observed", str(args.observed)] if args.observed else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (root / "m.tif").unlink(missing_ok=True)
    if proc.returncode:
        raise SystemExit(f"{task} {mode} at {folder.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


if __name__ == "__main__":
    main()
