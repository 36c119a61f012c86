"""``prepare`` + ``recurrence`` flows: sequential vs prefect-dask fan-out (LocalCluster).

Prints the wall time of each flow per task runner and the dask/sequential ratio. The fan-out
pays a cluster start and worker imports (seconds, per flow) and Prefect's per-task overhead, so
it wins only with many large patches and spare cores. Measured on 2 cores (24 / 160 patches of
128 px): dask x5.5 / x1.8 slower on prepare than sequential; the stage is worth fanning out on
a multi-core host or an existing cluster (``compute.dask_address``), not on a laptop.

    python benchmarks/fanout.py --patches 24 --patch-size 128 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=24)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--patches-per-task", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pimc-fanout-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.chdir(tmp)  # flows write metrics/ and plots/ relative to the working directory

        import logging

        logging.getLogger("distributed").setLevel(logging.WARNING)  # worker start/stop chatter
        from flows.prepare import prepare_flow
        from flows.recurrence import recurrence_flow
        from pimc.data.synthetic import SyntheticSpec, write_pastis

        spec = SyntheticSpec(pastis_patches=args.patches, patch_size=args.patch_size)
        write_pastis(tmp / "raw" / "PASTIS", spec, progress=False)
        params = str(Path(__file__).resolve().parents[1] / "params.yaml")
        prepare_flow(params, {"data.root": str(tmp / "raw"), "prepare.out": "warmup"})  # server

        times = {}
        for runner in ("sequential", "dask"):
            overrides = {
                "data.root": str(tmp / "raw"),
                "prepare.out": f"prepared-{runner}",
                "recurrence.out": f"recurrence-{runner}",
                "compute.task_runner": runner,
                "compute.dask_workers": args.workers,
                "compute.patches_per_task": args.patches_per_task,
            }
            t0 = time.perf_counter()
            prepare_flow(params, overrides)
            t1 = time.perf_counter()
            recurrence_flow(params, {**overrides, "prepare.out": f"prepared-{runner}"})
            times[runner] = (t1 - t0, time.perf_counter() - t1)

    print(f"{args.patches} patches of {args.patch_size} px, {args.workers} dask workers")
    print(f"{'runner':>10} {'prepare s':>10} {'recurrence s':>13}")
    for runner, (prep, rec) in times.items():
        print(f"{runner:>10} {prep:>10.2f} {rec:>13.2f}")
    seq, fan = times["sequential"], times["dask"]
    print(f"dask / sequential: prepare x{fan[0] / seq[0]:.2f}, recurrence x{fan[1] / seq[1]:.2f}")


if __name__ == "__main__":
    main()
