"""Downstream methods as records: how each is built, so task code never parses method names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pimc.core.errors import ConfigError
from pimc.core.task_config import TaskConfig

__all__ = ["METHODS", "Method", "method", "method_plan"]


@dataclass(frozen=True)
class Method:
    """How one method is built.

    Attributes:
        name: As in ``finetune.<task>.baselines`` and the ablation table.
        pretrained: The encoder starts from PIMC's weights (when a checkpoint is available).
        frozen: Linear probe: the encoder is not trained (BatchNorm statistics included).
        input: ``encoder``: the task tower's input (RPs, or image tiles for EuroSAT);
            ``series``: the raw index series (1-D CNN); ``none``: a closed-form forecast.
        channel: Keep only this RP channel (single-index ablation), or None for all.
        level: ``series`` input only: False removes each series' own mean per index, so the
            1-D CNN sees the shape of the season but not its level, as an RP does.
        weights: With ``pretrained``: ``pimc`` (the pretrain stage's RP <-> image checkpoint)
            or ``rp_views`` (RP-only self-supervision, :data:`pimc.core.paths.rp_views_out`).
        normalize_rp: RPs built with this ``recurrence.normalize`` (the normalisation
            ablation), or None for the pipeline's own plots.
    """

    name: str
    pretrained: bool
    frozen: bool
    input: Literal["encoder", "series", "none"] = "encoder"
    channel: int | None = None
    level: bool = True
    weights: Literal["pimc", "rp_views"] = "pimc"
    normalize_rp: bool | None = None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("pimc_linear", pretrained=True, frozen=True),
        Method("pimc_finetune", pretrained=True, frozen=False),
        Method("random_init", pretrained=False, frozen=False),
        Method("random_init_linear", pretrained=False, frozen=True),
        Method("random_init_finetune", pretrained=False, frozen=False),
        Method("random_init_normalized", pretrained=False, frozen=False, normalize_rp=True),
        Method("rp_ssl_linear", pretrained=True, frozen=True, weights="rp_views"),
        Method("rp_ssl_finetune", pretrained=True, frozen=False, weights="rp_views"),
        Method("cnn1d", pretrained=False, frozen=False, input="series"),
        Method("cnn1d_nolevel", pretrained=False, frozen=False, input="series", level=False),
        Method("persistence", pretrained=False, frozen=False, input="none"),
        Method("linear_extrapolation", pretrained=False, frozen=False, input="none"),
        Method("climatology", pretrained=False, frozen=False, input="none"),
    )
}
SINGLE_INDEX = "single_index"  # a group: single_index_<index> per prepared index


def method(name: str, index_names: Sequence[str] = ()) -> Method:
    """The record of method ``name``; ``single_index_<index>`` is the fine-tuned PIMC encoder
    seeing only that index's RP channel (the others zeroed).

    Raises:
        ConfigError: an unknown method name.
    """
    if name in METHODS:
        return METHODS[name]
    prefix = f"{SINGLE_INDEX}_"
    if name.startswith(prefix) and name[len(prefix) :] in index_names:
        channel = list(index_names).index(name[len(prefix) :])
        return Method(name, pretrained=True, frozen=False, channel=channel)
    raise ConfigError(f"unknown method {name!r}; known: {sorted(METHODS)} and {prefix}<index>")


def method_plan(cfg: TaskConfig, index_names: Sequence[str] = ()) -> list[Method]:
    """Methods to run, in a stable order: the PIMC variant of ``cfg.mode`` first, then
    ``cfg.baselines`` in the task's canonical order (``single_index`` expands per index)."""
    first = f"pimc_{cfg.mode}"
    plan = [first]
    for name in cfg.METHODS:
        if name in cfg.baselines and name != first:
            group = [f"{SINGLE_INDEX}_{i}" for i in index_names] if name == SINGLE_INDEX else [name]
            plan += group
    return [method(n, index_names) for n in plan]
