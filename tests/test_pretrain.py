from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch

from pimc.core.config import ModelConfig, Params, PrepareConfig, PretrainConfig
from pimc.core.errors import ConfigError, TrainingDivergedError
from pimc.core.io import load_checkpoint, save_checkpoint
from pimc.models.build import load_pretrained_model
from pimc.stages.pretrain import pretrain, resolved_config
from pimc.training.pairs import resolve_source
from tests.helpers import PIXELS, REPO, make_pairs_data

SMALL = ModelConfig(embed_dim=32, hidden_dim=64)


@pytest.fixture(scope="module")
def params(tiny_data, tmp_path_factory) -> Params:
    """Params over the tiny data: 3 x 32 train pairs, 32 val pairs, 6 steps per epoch."""
    root = tmp_path_factory.mktemp("pretrain")
    prepared, _, rcfg = make_pairs_data(tiny_data, root)
    return Params(
        prepare=PrepareConfig(out=str(prepared), pixels_per_patch=PIXELS),
        recurrence=rcfg,
        model=SMALL,
        pretrain=PretrainConfig(
            batch_size=16, epochs=2, warmup_steps=3, checkpoint_every=4, out=str(root / "m")
        ),
    )


def with_pretrain(params: Params, **changes: object) -> Params:
    return dataclasses.replace(params, pretrain=dataclasses.replace(params.pretrain, **changes))


def test_checkpoint_roundtrip_is_atomic(tmp_path):
    path = tmp_path / "c" / "last.pt"
    save_checkpoint(path, w=torch.arange(3), cfg={"a": [1, 2]}, rng=torch.get_rng_state())
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["w"], torch.arange(3)) and ckpt["cfg"] == {"a": [1, 2]}


def test_source_resolution():
    assert resolve_source(PretrainConfig(), materialize=True) == "on_the_fly"  # default crop
    cfg = PretrainConfig(temporal_crop=0.0)
    assert resolve_source(cfg, materialize=True) == "materialized"
    assert resolve_source(cfg, materialize=False) == "on_the_fly"
    assert resolve_source(dataclasses.replace(cfg, temporal_crop=0.2), True) == "on_the_fly"
    assert resolve_source(dataclasses.replace(cfg, source="on_the_fly"), True) == "on_the_fly"
    with pytest.raises(ConfigError, match="temporal_crop"):
        resolve_source(dataclasses.replace(cfg, temporal_crop=0.2, source="materialized"), True)


def test_batch_larger_than_train_set_is_rejected(params, tmp_path):
    with pytest.raises(ConfigError, match="lower the batch size"):
        pretrain(with_pretrain(params, batch_size=200, out=str(tmp_path)), progress=False)


def test_short_run_learns_and_writes_outputs(params, tmp_path):
    # No temporal crop, so the materialized plots are used (the other tests build them).
    p = with_pretrain(params, epochs=5, temporal_crop=0.0, out=str(tmp_path / "run"))
    logs: list[tuple[int, dict]] = []
    result = pretrain(p, log=lambda m, s: logs.append((s, m)), progress=False)
    losses = [m["train/loss"] for _, m in logs if "train/loss" in m]
    assert len(losses) == result["steps"] == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    vals = [m for _, m in logs if "val/top1" in m]
    best = min(range(5), key=lambda i: vals[i]["val/loss"])
    assert len(vals) == 5 and result["best_epoch"] == best + 1
    assert result["val/loss"] == vals[best]["val/loss"] == min(v["val/loss"] for v in vals)
    assert result["last_val_loss"] == vals[-1]["val/loss"]
    for v in vals:  # a parcel lies within one class: coarser groups retrieve at least as well
        assert 0 <= v["val/parcel_top1"] <= v["val/class_top1"] <= 1
    assert result["chance_top1"] == 1 / PIXELS and result["chance_top5"] == 5 / PIXELS
    assert 0 <= result["val/top1"] <= result["val/top5"] <= 1 and math.isfinite(result["val/loss"])
    assert result["global_batch"] == 16 and result["samples_per_second"] > 0
    out = tmp_path / "run"
    for name in ("last.pt", "best.pt", "final_metrics.json", "history.json", "rp_encoder.pt"):
        assert (out / name).is_file(), name
    model, ckpt = load_pretrained_model(out / "best.pt")  # weights_only=True inside
    last = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == best + 1 and ckpt["val_loss"] == result["val/loss"]
    if best < 4:  # the best epoch's weights, not the last step's
        assert any(not torch.equal(v, last["model"][k]) for k, v in ckpt["model"].items())
    assert torch.equal(last["best"]["model"]["logit_scale"], ckpt["model"]["logit_scale"])
    assert ckpt["config"] == resolved_config(p, "materialized", 1)
    assert ckpt["config"]["pretrain"]["train_folds"] == [1, 2, 3]
    assert ckpt["image_mean"].shape == ckpt["image_std"].shape == (10,)
    assert last["step"] == 30 and len(last["history"]) == 5 and ckpt["step"] == 6 * (best + 1)
    rp_state = torch.load(out / "rp_encoder.pt", weights_only=True)
    assert all(torch.equal(v, model.rp_encoder.state_dict()[k]) for k, v in rp_state.items())
    with torch.no_grad():
        z = model.encode_pixel(torch.rand(4, 3, 32, 32))
    assert z.shape == (4, 32)


def test_kill_and_resume_reaches_the_same_weights(params, tmp_path):
    # On-the-fly plots with every random augmentation, so all randomness must replay exactly.
    p = with_pretrain(params, temporal_crop=0.25, channel_dropout=0.3, flip_rotate=True)
    full = pretrain(with_pretrain(p, out=str(tmp_path / "a")), progress=False)
    b = with_pretrain(p, out=str(tmp_path / "b"))
    killed = pretrain(b, progress=False, max_steps=9)  # mid-epoch 2, last checkpoint: step 8
    assert killed["stopped_early"] and killed["steps"] == 9
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 8
    assert not (tmp_path / "b" / "final_metrics.json").exists()
    resumed = pretrain(b, progress=False)
    assert resumed["resumed_from_step"] == 8 and resumed["steps"] == full["steps"] == 12
    a_state = load_checkpoint(tmp_path / "a" / "last.pt")
    b_state = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a_state["model"].keys() == b_state["model"].keys()
    for key, value in a_state["model"].items():
        assert torch.equal(value, b_state["model"][key]), key
    assert a_state["history"] == b_state["history"]
    assert a_state["best"]["entry"] == b_state["best"]["entry"]  # the best epoch survives a kill
    assert resumed["val/top1"] == full["val/top1"]
    # The resumed run's curves are complete: the rows before the kill came from last.pt.
    for name in ("train_curve.json", "history.json"):
        rows = [json.loads((tmp_path / d / name).read_text()) for d in "ab"]
        assert rows[0] == rows[1] and rows[0], name
    assert [r["epoch"] for r in rows[0]] == [1, 2]  # history: one row per epoch

    # A finished run re-run with the same config does nothing; a changed config starts afresh.
    again = pretrain(b, progress=False)
    assert again["resumed_from_step"] == 12 and again["samples_per_second"] is None
    changed = pretrain(with_pretrain(b, lr=1e-3, epochs=1), progress=False)
    assert changed["resumed_from_step"] == 0 and changed["steps"] == 6
    assert load_checkpoint(tmp_path / "b" / "last.pt")["config"]["pretrain"]["lr"] == 1e-3


def test_torchrun_entry_parses_overrides_like_the_flows(monkeypatch, capsys):
    """`-S prepare.grid_start=2018-10-01` stays a string (plain YAML would make it a date)."""
    import pimc.stages.pretrain as stage

    seen: list[Params] = []
    monkeypatch.setattr(stage, "pretrain", lambda p, progress: seen.append(p) or {"steps": 0})
    argv = ["--params", str(REPO / "params.yaml"), "--no-progress"]
    stage.main([*argv, "-S", "prepare.grid_start=2018-10-01", "-S", "pretrain.lr=1e-3"])
    assert seen[0].prepare.grid_start == "2018-10-01" and seen[0].pretrain.lr == 1e-3
    assert '"steps": 0' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        stage.main([*argv, "-S", "pretrain.lr"])
    assert "must look like section.key=value" in capsys.readouterr().err


def test_rp_views_trains_only_the_rp_tower(params, tmp_path):
    """RP-only self-supervision: two augmented views of each pixel's RP, no image tower."""
    from pimc.models.build import build_model
    from pimc.training.utils import seed_everything

    p = with_pretrain(params, objective="rp_views", epochs=2, out=str(tmp_path / "views"))
    result = pretrain(p, progress=False)
    assert math.isfinite(result["val/loss"]) and 0 <= result["val/parcel_top1"] <= 1
    out = tmp_path / "views"
    assert (out / "rp_encoder.pt").is_file() and not (out / "image_encoder.pt").exists()
    seed_everything(p.pretrain.seed)
    init = build_model(p.model, 3, 10).state_dict()
    best = load_checkpoint(out / "best.pt")["model"]
    image = [k for k in init if k.startswith("image_encoder.")]
    rp = [k for k in init if k.startswith("rp_encoder.") and init[k].is_floating_point()]
    assert image and all(torch.equal(best[k], init[k]) for k in image)  # no gradient, no step
    assert any(not torch.equal(best[k], init[k]) for k in rp)


def test_rp_views_needs_an_augmentation():
    with pytest.raises(ConfigError, match="pretrain.objective"):
        PretrainConfig(objective="rp_views", temporal_crop=0.0, channel_dropout=0.0)
    from pimc.core.config import load_params

    with pytest.raises(ConfigError, match="pretrain.objective"):
        load_params(REPO / "params.yaml", {"pretrain.objective": "image"})


def test_a_nan_loss_stops_pretraining_naming_the_step(params, tmp_path):
    """Issue 13: a diverged run used to train on and save NaN weights."""
    diverging = with_pretrain(params, lr=1e30, warmup_steps=0, out=str(tmp_path))
    with pytest.raises(TrainingDivergedError, match=r"pretrain: loss is (nan|inf) at step \d+ "):
        pretrain(diverging, progress=False)
    if (tmp_path / "last.pt").exists():  # any checkpoint kept is from before the bad step
        state = load_checkpoint(tmp_path / "last.pt")["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_resumed_run_writes_the_same_bytes(params, tmp_path):
    """Issue 13: equal weights used to give other .pt bytes, so DVC re-ran every fine-tuning."""
    p = with_pretrain(params, out=str(tmp_path / "m"))
    pretrain(p, progress=False)
    first = {f.name: f.read_bytes() for f in (tmp_path / "m").iterdir()}
    shutil.rmtree(tmp_path / "m")
    pretrain(p, progress=False, max_steps=9)
    pretrain(p, progress=False)
    again = {f.name: f.read_bytes() for f in (tmp_path / "m").iterdir()}
    assert sorted(first) == sorted(again)
    for name in first:
        assert first[name] == again[name], name
