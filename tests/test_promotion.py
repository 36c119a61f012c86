"""Champion/challenger decisions against a real (sqlite) MLflow registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pimc import promotion, tracking


def _new_version(name: str, value: float | None, higher: bool | None = True) -> str:
    net = torch.nn.Linear(2, 1)
    with tracking.start_run("finetune@test", {}, experiment="test-promotion") as run:
        info = run.log_model(net, "m", np.zeros((2, 2), np.float32), name)
    version = str(info.registered_model_version)
    tags = {} if higher is None else {"higher_is_better": higher}
    if value is not None:
        tags["metric.macro_f1"] = value
    tracking.tag_version(name, version, tags)
    if tracking.get_alias(name, "champion") is None:  # as the finetune flow does
        tracking.set_alias(name, "champion", version)
    return version


@pytest.mark.parametrize(
    "cand, champ, higher, margin, promoted",
    [
        (0.91, 0.90, True, 0.005, True),
        (0.904, 0.90, True, 0.005, False),  # better, but not by the margin
        (0.89, 0.90, True, 0.0, False),
        (0.90, 0.90, True, 0.0, False),  # a tie never replaces the champion
        (0.30, 0.35, False, 0.01, True),  # lower is better (RMSE)
        (0.36, 0.35, False, 0.0, False),
        (0.905, 0.90, True, 0.005, False),  # exactly the margin, despite float rounding
        (float("nan"), 0.90, True, 0.0, False),
        (0.95, float("nan"), True, 0.0, False),  # a NaN champion is not comparable either
    ],
)
def test_compare(cand, champ, higher, margin, promoted):
    ok, reason = promotion.compare(cand, champ, higher, margin, "m")
    assert ok is promoted
    assert f"{cand:.4f}" in reason


def test_first_version_then_promote_then_challenger():
    name = "pimc-test-promotion"
    before = tracking.latest_version(name)
    assert before is None
    v1 = _new_version(name, 0.80)
    d = promotion.decide(name, before, margin=0.01)
    assert d.promoted and d.candidate == v1 and "first version" in d.reason
    promotion.apply(d)

    v2 = _new_version(name, 0.85)  # better by 0.05 > 0.01
    d = promotion.decide(name, v1, margin=0.01)
    assert (d.promoted, d.candidate, d.champion) == (True, v2, v1)
    promotion.apply(d)
    assert tracking.get_alias(name, "champion") == v2
    assert tracking.version_tags(name, v2)["retrain.replaced"] == v1

    v3 = _new_version(name, 0.855)  # better by 0.005 < 0.01
    d = promotion.decide(name, v2, margin=0.01)
    assert not d.promoted and d.champion_value == pytest.approx(0.85)
    promotion.apply(d)
    assert tracking.get_alias(name, "champion") == v2
    assert tracking.get_alias(name, "challenger") == v3
    tags = tracking.version_tags(name, v3)
    assert tags["retrain.decision"] == "challenger" and "margin 0.01" in tags["challenger"]

    d = promotion.decide(name, v3, margin=0.01)  # nothing new registered since v3
    assert d.candidate is None and not d.promoted and "no new version" in d.reason
    promotion.apply(d)  # a no-op
    assert tracking.get_alias(name, "champion") == v2


def test_candidate_without_metric_keeps_champion():
    name = "pimc-test-promotion-untagged"
    v1 = _new_version(name, 0.5)
    _new_version(name, None)
    d = promotion.decide(name, v1, margin=0.0)
    assert not d.promoted and "lacks its metric" in d.reason


def test_promotion_clears_an_older_challenger():
    name = "pimc-test-promotion-clear"
    v1 = _new_version(name, 0.5)
    v2 = _new_version(name, 0.4)
    promotion.apply(promotion.decide(name, v1, margin=0.0))
    assert tracking.get_alias(name, "challenger") == v2
    v3 = _new_version(name, 0.7)
    promotion.apply(promotion.decide(name, v2, margin=0.0))
    assert tracking.get_alias(name, "champion") == v3
    assert tracking.get_alias(name, "challenger") is None


@pytest.mark.parametrize("champion_higher, candidate_higher", [(True, None), (True, False)])
def test_incomparable_directions_keep_the_champion(champion_higher, candidate_higher):
    name = f"pimc-test-promotion-dir-{champion_higher}-{candidate_higher}"
    v1 = _new_version(name, 0.5, champion_higher)
    _new_version(name, 0.9, candidate_higher)
    d = promotion.decide(name, v1, margin=0.0)
    assert not d.promoted, d.reason
    promotion.apply(d)
    assert tracking.get_alias(name, "champion") == v1


def test_promotion_moves_the_raw_twins_aliases_with_the_task_models():
    """`pimc serve --model NAME@champion` serves NAME-raw@champion: the twin of the champion."""
    name, twin = "pimc-test-twins", "pimc-test-twins-raw"
    client = tracking._client()
    client.create_registered_model(twin)

    def with_twin(value):
        version = _new_version(name, value)
        run_id = tracking.version_run(name, version)
        return version, str(client.create_model_version(twin, "file:///x", run_id).version)

    v1, t1 = with_twin(0.80)
    tracking.set_alias(twin, "champion", t1)
    v2, t2 = with_twin(0.90)
    promotion.apply(promotion.decide(name, v1, margin=0.01))
    assert tracking.get_alias(name, "champion") == v2 and tracking.get_alias(twin, "champion") == t2
    _, t3 = with_twin(0.85)
    promotion.apply(promotion.decide(name, v2, margin=0.01))
    assert (
        tracking.get_alias(twin, "champion") == t2 and tracking.get_alias(twin, "challenger") == t3
    )
