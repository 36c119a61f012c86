"""benchmarks/scale.py end to end at a toy size: every stage measured, a finite extrapolation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from pimc.core.task_config import TASK_NAMES
from tests.helpers import REPO

# The smallest valid data (one patch per fold) and one optimiser step per stage: the script's
# plumbing is under test here, not the pipeline's speed.
FAST = [
    "pretrain.epochs=1",
    "pretrain.batch_size=8",
    "finetune.*.epochs=1",
    "finetune.*.epoch_steps=1",
    "finetune.*.baselines=[]",
    "data.synthetic.eurosat_per_class=5",
    "data.synthetic.max_dates=40",
    "compute.torch_threads=1",
    "recurrence.materialize=false",  # whatever params.yaml says: the gallery note is checked
]
STAGES = ("data", "prepare", "recurrence", "pretrain", *TASK_NAMES)


def test_scale_prints_every_stage_and_a_finite_extrapolation(tmp_path):
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PIMC_ARTIFACT_ROOT": str(tmp_path / "mlartifacts"),
        "MPLBACKEND": "Agg",
    }
    cmd = [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--patches", "5", "6"]
    cmd += ["--patch-size", "16", "--pixels-per-patch", "8", "--tmp", str(tmp_path)]
    cmd += ["--json", str(tmp_path / "scale.json"), *[a for s in FAST for a in ("-S", s)]]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    head, _, tail = out.partition("extrapolated to 2,433 patches")
    assert tail, out
    for stage in STAGES:
        assert sum(line.split()[0] == stage for line in head.splitlines() if line) == 2, out
        row = next(line.split() for line in tail.splitlines() if line.startswith(stage + " "))
        seconds, disk, rss, ratio = (float(row[i]) for i in (1, 3, 4, 5))
        assert all(math.isfinite(v) and v >= 0 for v in (seconds, disk, rss, ratio)), row
        assert row[6] in ("flat", "grows", "falls"), row
    assert "recurrence: gallery only" in out  # materialize is false in params.yaml
    assert "finetune peak RSS 5 -> 6 patches:" in out
    doc = json.loads((tmp_path / "scale.json").read_text())
    assert {r["stage"] for r in doc["rows"]} == set(STAGES)
    assert all(r["peak_rss_mib"] > 0 for r in doc["rows"])
    # Every stage wrote under --tmp, and its temp folders are gone again.
    assert not list(tmp_path.glob("pimc-scale-*"))
