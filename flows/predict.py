"""Scene prediction spread over a Dask cluster: the windows of one scene as Prefect tasks.

    python -m flows.predict --model pimc-pastis-classifier --scene my_scene/ --out map.tif \\
        --workers 4                       # a LocalCluster of 4 processes
    python -m flows.predict ... --dask-address tcp://scheduler:8786 --resume

The same plan, windows and assembly as ``pimc predict --scene`` (:mod:`pimc.scene_predict`),
so the map is the same file; workers write finished windows as part files, so a killed flow
resumes with ``--resume``. Workers load the model from the registry themselves (once per
process) and need the same ``MLFLOW_TRACKING_URI``, and paths they can reach.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import dask_task_runner, map_in_order, stage_main
from pimc.core.config import ComputeConfig
from pimc.predict import load_deployed
from pimc.scene import open_scene
from pimc.scene_predict import assemble, plan_scene, predict_windows, provenance


@functools.lru_cache(maxsize=2)
def _model(ref: str):
    return load_deployed(ref)  # once per worker process, not once per task


@task(cache_policy=NO_CACHE)
def predict_window_batch(
    windows: list[tuple[int, int, int, int]],
    ref: str,
    scene_path: str,
    bands: list[str] | None,
    work: str,
    batch_size: int,
    mask_dir: str | None = None,
) -> list[str]:
    model, meta = _model(ref)
    scene = open_scene(scene_path, bands, mask_dir)
    return predict_windows(model, meta, scene, windows, Path(work), batch_size)


@flow(name="pimc-predict-scene", log_prints=True)
def predict_scene_flow(
    model: str,
    scene: str,
    out: str,
    bands: list[str] | None = None,
    window: int = 256,
    batch_size: int = 2048,
    resume: bool = False,
    compute: ComputeConfig | None = None,
    mask_dir: str | None = None,
) -> str:
    """Plan here, predict the unfinished windows on the flow's task runner, assemble here."""
    compute = compute or ComputeConfig()
    opened = open_scene(scene, bands, mask_dir)
    _, meta = load_deployed(model)
    tags = provenance(model)
    plan = plan_scene(opened, meta, out, window, tags, resume)
    print(f"{len(plan.todo)} of {len(plan.windows)} windows to predict")
    scene_path, work = str(Path(scene).resolve()), str(plan.work.resolve())
    masks = str(Path(mask_dir).resolve()) if mask_dir else None
    fixed = {"ref": model, "scene_path": scene_path, "bands": bands, "work": work,
             "mask_dir": masks}  # fmt: skip
    done = map_in_order(predict_window_batch, plan.todo, compute, batch_size=batch_size, **fixed)
    for _ in done:  # raises the first failed window's error
        pass
    summary = assemble(plan, opened, meta, tags, window)
    print(summary)
    return summary


def run(args: argparse.Namespace) -> str:
    compute = ComputeConfig(
        task_runner="dask",
        dask_address=args.dask_address,
        dask_workers=args.workers,
        patches_per_task=args.windows_per_task,
    )
    bands = args.bands.split(",") if args.bands else None
    runner = predict_scene_flow.with_options(task_runner=dask_task_runner(compute))
    return runner(args.model, args.scene, args.out, bands, args.window, args.batch_size,
                  args.resume, compute, args.mask_dir)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="NAME@ALIAS, NAME/VERSION or NAME")
    parser.add_argument("--scene", required=True, help="per-date GeoTIFF folder or a stack")
    parser.add_argument("--out", required=True, help="the map (.tif, a COG)")
    parser.add_argument("--bands", help="the files' band order when not described")
    parser.add_argument("--mask-dir", help="per-date cloud masks (1 = cloudy)")
    parser.add_argument("--window", type=int, default=256, help="window side (px)")
    parser.add_argument("--batch-size", type=int, default=2048, help="pixels per forward pass")
    parser.add_argument("--resume", action="store_true", help="keep finished windows")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster processes")
    parser.add_argument("--dask-address", help="an existing scheduler (tcp://host:8786)")
    parser.add_argument("--windows-per-task", type=int, default=4, help="windows per task")
    return parser


if __name__ == "__main__":
    with stage_main("predict"):
        run(build_parser().parse_args())
