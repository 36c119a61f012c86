"""The downstream tasks and their methods, each stated once.

One :class:`TaskSpec` per task says everything the flows, the report, retraining and
``pimc predict`` need to know about it. The task names themselves are the fields of
:class:`pimc.core.task_config.FinetuneConfig` (``TASK_NAMES``); ``tests/test_registry.py`` checks
that this registry, ``params.yaml`` and ``dvc.yaml``'s ``finetune`` ``foreach`` agree.
Methods are in :mod:`pimc.tasks.methods`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pimc.core.errors import ConfigError
from pimc.core.paths import ENCODER_MODELS
from pimc.core.task_config import EurosatConfig, ForecastConfig, PixelClsConfig, TaskConfig
from pimc.tasks import eurosat, forecast, pixel_cls

__all__ = ["TASKS", "TaskSpec", "get_task"]


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task.

    Attributes:
        name: The task name (``finetune.<name>`` in params, ``finetune@<name>`` in DVC).
        headline: The test metric that ranks methods and decides promotion.
        higher_is_better: Direction of ``headline``.
        config: The ``finetune.<name>`` config class.
        run: ``run(params, *, pretrained, out_dir, progress, log, cache) -> result dict``.
        registered_model: MLflow registered name of the task's PIMC model.
        tower: The PIMC tower it fine-tunes (``rp_encoder`` / ``image_encoder``).
        deploy_metadata: ``(params, result) -> dict`` logged with the model: what
            ``pimc predict`` needs to rebuild its input.
        predict_input: PASTIS-patch tasks: ``(series (B, I, L), valid (B, L), recurrence cfg,
            meta) -> model input``; None for tasks that take tiles.
        decode: PASTIS-patch tasks: ``(outputs (N, ...), valid (N, L), meta, grid, (H, W))
            -> arrays`` written by ``pimc predict``; None for tile tasks.
        model_card: What the registered model takes and returns (its MLflow description).
    """

    name: str
    headline: str
    higher_is_better: bool
    config: type[TaskConfig]
    run: Callable[..., dict[str, Any]]
    registered_model: str
    tower: str
    deploy_metadata: Callable[..., dict[str, Any]]
    predict_input: Callable[..., Any] | None = None
    decode: Callable[..., dict[str, Any]] | None = None
    model_card: str = ""

    def metadata(self, params: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Deployment metadata logged with the task model (plain YAML-safe values)."""
        meta = {"pimc_task": self.name, **self.deploy_metadata(params, result)}
        return json.loads(json.dumps(meta, default=str))

    def description(self) -> str:
        """The registered model's MLflow description: its model card and where the
        preprocessing metadata lives."""
        return (
            f"{self.model_card} Metadata (preprocessing, class ids): the MLmodel file's "
            f"'metadata', e.g. pimc.tracking.model_metadata('models:/{self.registered_model}"
            "@champion'). Served with `pimc predict`."
        )

    @property
    def encoder_model(self) -> str:
        """Registered name of the pretrained tower (``finetune.<task>.pretrained: registry``)."""
        return ENCODER_MODELS[self.tower]


def _spec(module, name: str, config: type[TaskConfig], registered: str, tower: str) -> TaskSpec:
    """A task's spec from its module's constants and functions (stated there, once)."""
    return TaskSpec(
        name=name,
        headline=module.HEADLINE,
        higher_is_better=module.HIGHER_IS_BETTER,
        config=config,
        run=getattr(module, f"run_{name}"),
        registered_model=registered,
        tower=tower,
        deploy_metadata=module.deploy_metadata,
        predict_input=getattr(module, "predict_input", None),
        decode=getattr(module, "decode", None),
        model_card=module.MODEL_CARD,
    )


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _spec(forecast, "forecast", ForecastConfig, "pimc-pastis-forecaster", "rp_encoder"),
        _spec(pixel_cls, "pixel_cls", PixelClsConfig, "pimc-pastis-classifier", "rp_encoder"),
        _spec(eurosat, "eurosat", EurosatConfig, "pimc-eurosat-classifier", "image_encoder"),
    )
}


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``.

    Raises:
        ConfigError: an unknown task.
    """
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
