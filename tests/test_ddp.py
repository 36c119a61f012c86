"""Two-process CPU (gloo) pretraining under torchrun."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from pimc.core.config import ModelConfig, PrepareConfig, PretrainConfig
from pimc.core.io import load_checkpoint
from tests.helpers import PIXELS, REPO, make_pairs_data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_share_negatives(tiny_data, tmp_path):
    prepared, _, rcfg = make_pairs_data(tiny_data, tmp_path)
    sections = {
        "prepare": PrepareConfig(out=str(prepared), pixels_per_patch=PIXELS),
        "recurrence": rcfg,
        "model": ModelConfig(embed_dim=32, hidden_dim=64),
        "pretrain": PretrainConfig(batch_size=8, epochs=2, checkpoint_every=5, out="model"),
    }
    # JSON round trip: tuples -> lists, which yaml.safe_dump accepts.
    raw = json.loads(json.dumps({k: dataclasses.asdict(v) for k, v in sections.items()}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "-m",
        "pimc.stages.pretrain",
        "--params",
        "params.yaml",
        "--no-progress",
        "-S",
        "pretrain.seed=3",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count('"global_batch"') == 1  # only rank 0 reports

    out = tmp_path / "model"
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "final_metrics.json",
        "history.json",
        "image_encoder.pt",
        "last.pt",
        "rp_encoder.pt",
        "train_curve.json",
    ]
    metrics = json.loads((out / "final_metrics.json").read_text())
    # 96 train pairs / (2 ranks x 8) = 6 steps per epoch; each rank scored 16 candidates.
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 16
    assert metrics["candidates_per_query"] == 16  # the gathered batch, not the local 8
    assert metrics["steps"] == 12 and metrics["val/top1"] is not None
    ckpt = load_checkpoint(out / "last.pt")
    # The default temporal crop needs plots built on the fly.
    assert ckpt["config"]["runtime"] == {"source": "on_the_fly", "world_size": 2}
    assert ckpt["config"]["pretrain"]["seed"] == 3 and ckpt["step"] == 12
    assert len(ckpt["history"]) == 2
