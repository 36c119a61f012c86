"""Champion/challenger promotion in the MLflow model registry (used by ``flows.retrain``).

Every registered task-model version is tagged by the finetune flow with its test headline metric
(``metric.<name>``) and ``higher_is_better``. After a retraining run, the newest version of each
model is the candidate: it takes the ``champion`` alias only if it beats the current champion by
more than ``margin`` in the better direction. Otherwise it gets the ``challenger`` alias and a
``challenger`` tag holding the reason, so `models:/NAME@challenger` can still be A/B tested.
Every version that was decided on carries a ``retrain.decision`` tag.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pimc import tracking

__all__ = ["Decision", "apply", "compare", "decide"]

CHAMPION, CHALLENGER = "champion", "challenger"
_EPS = 1e-12


@dataclass(frozen=True)
class Decision:
    """What happened to one registered model in one retraining run.

    Attributes:
        model: Registered model name.
        candidate: Newest version, or None when the run registered no new version.
        champion: Version behind ``@champion`` before the decision (None: no champion yet).
        metric: The headline metric compared (``metric.<name>`` tag without the prefix).
        candidate_value: The candidate's test headline.
        champion_value: The champion's test headline.
        promoted: The candidate is (now) the champion.
        reason: One sentence for people reading the log or the registry.
    """

    model: str
    candidate: str | None
    champion: str | None
    metric: str | None
    candidate_value: float | None
    champion_value: float | None
    promoted: bool
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def compare(
    candidate: float, champion: float, higher_is_better: bool, margin: float, metric: str
) -> tuple[bool, str]:
    """Whether ``candidate`` beats ``champion`` by more than ``margin``, and why (not).

    >>> compare(0.91, 0.90, True, 0.002, "macro_f1")[0]
    True
    >>> compare(0.30, 0.29, False, 0.0, "rmse")[0]
    False
    """
    gain = candidate - champion if higher_is_better else champion - candidate
    direction = "higher" if higher_is_better else "lower"
    detail = (
        f"{metric} {candidate:.4f} vs champion {champion:.4f} ({direction} is better): "
        f"gain {gain:+.4f}"
    )
    if not (math.isfinite(candidate) and math.isfinite(champion)):
        return False, f"{detail}: not comparable (non-finite value)"
    if gain > margin + _EPS:  # 0.905 - 0.9 > 0.005 in floating point: ties stay ties
        return True, f"{detail} > margin {margin}"
    return False, f"{detail} <= margin {margin}"


def _headline(tags: dict[str, str]) -> tuple[str | None, float | None, bool | None]:
    """(metric, value, higher_is_better) of a version's tags; None where a tag is missing."""
    metrics = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                metrics[key.removeprefix("metric.")] = float(value)
            except ValueError:
                continue
    direction = tags.get("higher_is_better", "").strip().lower()
    higher = {"true": True, "1": True, "false": False, "0": False}.get(direction)
    if not metrics:
        return None, None, higher
    metric, value = next(iter(metrics.items()))  # task versions carry one headline tag
    return metric, value, higher


def decide(model: str, previous_latest: str | None, margin: float) -> Decision:
    """Compare the versions registered since ``previous_latest`` with the champion (read only).

    Args:
        model: Registered model name.
        previous_latest: Newest version before the retraining run (None: there was none).
        margin: Required improvement of the headline, in its units.
    """
    latest = tracking.latest_version(model)
    champion = tracking.get_alias(model, CHAMPION)
    if latest is None or latest == previous_latest:
        return Decision(
            model,
            None,
            champion,
            None,
            None,
            None,
            False,
            "no new version: the pipeline reused cached results for this task",
        )
    metric, value, higher = _headline(tracking.version_tags(model, latest))
    if champion is None or champion == latest:
        # The finetune flow makes a model's first version champion so @champion always resolves.
        return Decision(
            model,
            latest,
            champion,
            metric,
            value,
            value,
            True,
            "first version of this model: champion by default",
        )
    champ_metric, champ_value, champ_higher = _headline(tracking.version_tags(model, champion))
    if value is None or higher is None:
        return Decision(
            model, latest, champion, metric, value, champ_value, False,
            "candidate lacks its metric.* or higher_is_better tag; cannot compare, champion kept",
        )  # fmt: skip
    if champ_value is None or champ_metric != metric or champ_higher not in (None, higher):
        return Decision(
            model, latest, champion, metric, value, champ_value, False,
            f"champion v{champion} has no comparable metric.{metric} tag; champion kept "
            f"(promote by hand: pimc.tracking.set_alias('{model}', 'champion', '{latest}'))",
        )  # fmt: skip
    promoted, reason = compare(value, champ_value, higher, margin, metric)
    return Decision(model, latest, champion, metric, value, champ_value, promoted, reason)


def apply(decision: Decision) -> None:
    """Write ``decision`` to the registry: move ``champion`` or mark the ``challenger``.

    Tags go first and the alias last, so a retried call after a failure half-way never leaves
    an alias moved without its reason.
    """
    if decision.candidate is None:
        return
    name, version = decision.model, decision.candidate
    tags = {
        "retrain.decision": "promoted" if decision.promoted else "challenger",
        "retrain.reason": decision.reason,
    }
    if decision.promoted:
        if decision.champion and decision.champion != version:
            tags["retrain.replaced"] = decision.champion
        tracking.tag_version(name, version, tags)
        _follow(name, version, CHAMPION)  # the REST twin first: the alias move is the commit
        tracking.set_alias(name, CHAMPION, version)
        if tracking.get_alias(name, CHALLENGER) is not None:
            tracking.delete_alias(name, CHALLENGER)  # an older challenger lost to this one
    else:
        tags[CHALLENGER] = decision.reason
        tracking.tag_version(name, version, tags)
        _follow(name, version, CHALLENGER)
        tracking.set_alias(name, CHALLENGER, version)


def _follow(name: str, version: str, alias: str) -> None:
    """Point ``alias`` of ``name``'s raw-observation twin (``<name>-raw``) at the twin the same
    run registered, so ``pimc serve --model name@champion`` serves the champion."""
    raw = name + tracking.RAW_SUFFIX
    run_id = tracking.version_run(name, version)
    twin = tracking.version_of_run(raw, run_id) if run_id else None
    if twin is not None:
        tracking.set_alias(raw, alias, twin)
