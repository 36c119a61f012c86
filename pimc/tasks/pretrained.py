"""Pretrained towers for downstream tasks: where the weights come from, and copying them.

``finetune.<task>.pretrained`` is ``stage`` (the pretrain stage's ``best.pt``), ``registry``
(the caller passes the checkpoint behind ``models:/...@champion``) or ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from pimc.core.config import ModelConfig, Params
from pimc.core.errors import ConfigError, DatasetNotFoundError
from pimc.core.paths import BEST_CHECKPOINT, rp_views_out
from pimc.core.task_config import TaskConfig
from pimc.models import PIMC, build_backbone
from pimc.models.build import load_pretrained_model
from pimc.tasks.methods import Method

TOWERS = {"rp_encoder": "rp_backbone", "image_encoder": "image_backbone"}


@dataclass
class Pretrained:
    """Where pretrained weights come from.

    Attributes:
        model: A module holding the towers' weights (PIMC, an encoder, a backbone or a loaded
            registry model), or None for random initialisation.
        image_mean: ``(10,)`` band means the image tower was pretrained with (checkpoints only).
        image_std: ``(10,)`` band stds, idem.
        source: ``"stage:<path>"``, ``"checkpoint:<path>"`` (a path passed in), ``"argument"``
            (a module passed in) or ``"none"``; recorded with the results.
    """

    model: nn.Module | None
    image_mean: Tensor | None = None
    image_std: Tensor | None = None
    source: str = "none"


def resolve_pretrained(
    pretrained: nn.Module | str | Path | None, cfg: TaskConfig, params: Params
) -> Pretrained:
    """Apply ``finetune.<task>.pretrained``: ``stage``, ``registry`` or ``none``.

    An explicitly passed model or checkpoint path wins over ``stage``'s ``best.pt``; ``none``
    ignores it (every encoder then starts from random weights).
    """
    if cfg.pretrained == "none":
        return Pretrained(None)
    if isinstance(pretrained, nn.Module):
        return Pretrained(pretrained, source="argument")
    if pretrained is None and cfg.pretrained == "registry":
        raise ConfigError(
            f"'{cfg.SECTION}.pretrained' is 'registry' but no model was passed; pass "
            "pretrained=<the registered encoder or PIMC>, or set it to 'stage' or 'none'"
        )
    stage = Path(params.pretrain.out) / BEST_CHECKPOINT
    path = Path(pretrained) if pretrained is not None else stage
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} not found ('{cfg.SECTION}.pretrained' = {cfg.pretrained!r}); run the "
            "pretrain stage first, point 'pretrain.out' at its output, or set "
            f"'{cfg.SECTION}.pretrained: none'"
        )
    model, ckpt = load_pretrained_model(path)
    label = f"{'stage' if pretrained is None else 'checkpoint'}:{path}"
    return Pretrained(model, ckpt.get("image_mean"), ckpt.get("image_std"), label)


def resolve_sources(
    pretrained: nn.Module | str | Path | None,
    cfg: TaskConfig,
    params: Params,
    plan: Sequence[Method],
) -> dict[str, Pretrained]:
    """The weights of each ``Method.weights`` kind that ``plan`` uses.

    ``pimc``: :func:`resolve_pretrained`. ``rp_views`` (``rp_ssl_*`` methods): the
    ``best.pt`` under :func:`~pimc.core.paths.rp_views_out` (random weights when
    ``cfg.pretrained`` is ``none``, like every other method).
    """
    sources = {"pimc": resolve_pretrained(pretrained, cfg, params)}
    if not any(m.pretrained and m.weights == "rp_views" for m in plan):
        return sources
    if cfg.pretrained == "none":
        sources["rp_views"] = Pretrained(None)
        return sources
    out = rp_views_out(params.pretrain.out)
    path = out / BEST_CHECKPOINT
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} not found: the rp_ssl_* methods of '{cfg.SECTION}.baselines' start from "
            "RP-only pretraining; run the pretrain stage with pretrain.objective: rp_views "
            f"and pretrain.out: {out} (make benchmark does), or drop them from the baselines"
        )
    model, ckpt = load_pretrained_model(path)
    sources["rp_views"] = Pretrained(
        model, ckpt.get("image_mean"), ckpt.get("image_std"), f"stage:{path}"
    )
    return sources


def tower_backbone(
    source: nn.Module | None, tower: str, channels: int, model_cfg: ModelConfig
) -> nn.Module:
    """A fresh backbone of ``tower`` (``rp_encoder``/``image_encoder``) with ``source``'s weights.

    Weights are copied by state dict into a new module, so the caller's model is never trained
    in place, and modules that lost their Python class (e.g. a ``torch.export``-ed registry
    model) still work as long as their parameter names are the PIMC ones. With ``source`` None
    the backbone is randomly initialised (seed the global RNG first).

    Args:
        source: PIMC, an :class:`~pimc.models.Encoder`, a bare backbone, or None.
        tower: ``"rp_encoder"`` or ``"image_encoder"``.
        channels: Input channels the task feeds.
        model_cfg: Architecture when ``source`` is not a PIMC (which carries its own config).

    Raises:
        ConfigError: the weights do not fit the architecture, or the channel counts differ.
    """
    arch = dict(name=getattr(model_cfg, TOWERS[tower]), small_input=model_cfg.small_input)
    if isinstance(source, PIMC):
        arch = dict(name=source.config[TOWERS[tower]], small_input=source.config["small_input"])
    kw = {"small_input": arch["small_input"]} if arch["name"].startswith("resnet") else {}
    backbone = build_backbone(arch["name"], channels, **kw)
    if source is None:
        return backbone
    want = backbone.state_dict()
    state = source.state_dict()
    for prefix in (f"{tower}.backbone.", "backbone.", ""):
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if set(picked) == set(want):
            break
    else:
        raise ConfigError(
            f"the pretrained {type(source).__name__} has no {arch['name']} {tower} weights "
            f"(expected keys like {next(iter(want))!r}); pass a PIMC or its {tower}, or set "
            "'model' to the architecture it was trained with"
        )
    bad = [k for k, v in picked.items() if v.shape != want[k].shape]
    if bad:
        raise ConfigError(
            f"pretrained {tower} does not fit {channels} input channels ({bad[0]}: "
            f"{tuple(picked[bad[0]].shape)} vs {tuple(want[bad[0]].shape)}); the task's "
            "indices/bands must be the ones it was pretrained on"
        )
    backbone.load_state_dict(picked)
    return backbone
