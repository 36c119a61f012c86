"""Downstream tasks: each ``run_<task>(params, *, pretrained, out_dir, progress, log) -> dict``
trains PIMC's variants and the task's baselines, keeps every method's best-on-validation
checkpoint, evaluates on test and writes figures (see :func:`pimc.tasks.common.finish`).

* :func:`run_forecast`: next grid steps of a pixel's index series (headline ``rmse_mean_std``,
  lower is better);
* :func:`run_pixel_cls`: PASTIS crop type of a pixel (headline ``macro_f1``);
* :func:`run_eurosat`: EuroSAT scene class with the image tower (headline ``accuracy``).

Method names are shared across tasks for the ablation table: ``pimc_linear``, ``pimc_finetune``,
``random_init`` (EuroSAT: ``random_init_linear``/``random_init_finetune``) plus the task's own
baselines.
"""

from __future__ import annotations

from pimc.tasks.eurosat import run_eurosat
from pimc.tasks.forecast import run_forecast
from pimc.tasks.pixel_cls import run_pixel_cls

__all__ = ["run_eurosat", "run_forecast", "run_pixel_cls"]
