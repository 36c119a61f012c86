"""``data`` stage: produce the raw datasets, log counts, checksums and the difficulty card.

Run by DVC as ``python -m flows.data``; ``data.source`` picks the embedded synthetic data or
the real downloads.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.common import record_metrics, stage_args, stage_main
from pimc import tracking
from pimc.core.config import DataConfig, load_params
from pimc.core.io import write_json
from pimc.core.paths import results_file
from pimc.core.typed_config import parse_overrides
from pimc.stages import data as data_stage

STAGE = "data"
# The calibration target of the difficulty card (1-NN on raw NDVI) and the cloud share; the
# full card (nearest centroid, chance, parcels per fold) and counts: reports/data.json.
HEADLINE = ("difficulty_nn1_macro_f1", "difficulty_cloud_share")


@task
def synthesize(cfg: DataConfig) -> dict[str, Any]:
    return data_stage.synthesize(cfg)


# Retries only on I/O that can fail transiently; downloads resume where they stopped.
@task(retries=3, retry_delay_seconds=30)
def download_eurosat(cfg: DataConfig) -> None:
    data_stage.download_eurosat(cfg)


@task(retries=3, retry_delay_seconds=30)
def download_pastis(cfg: DataConfig) -> None:
    data_stage.download_pastis(cfg)


@task
def summarize(cfg: DataConfig) -> dict[str, Any]:
    return data_stage.summarize(cfg)


@task
def difficulty(cfg: DataConfig) -> dict[str, float]:
    return data_stage.difficulty(cfg)


@flow(name="pimc-data", log_prints=True)
def data_flow(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict:
    """Produce ``data.root``/{PASTIS,EuroSAT}; write ``metrics/data.json`` and
    ``reports/data.json`` (the counts and the whole difficulty card)."""
    cfg = load_params(params_path, overrides).data
    with tracking.start_run(STAGE, {"data": cfg}, tags={"data.source": cfg.source}) as run:
        if cfg.source == "synthetic":
            synthesize(cfg)
        else:
            data_stage.check_disk(cfg)  # before anything is fetched; not retried
            download_eurosat(cfg)
            download_pastis(cfg)
        stats = summarize(cfg)
        card = difficulty(cfg)
        counts = data_stage.count_metrics(stats)
        metrics = record_metrics(run, STAGE, {**counts, **data_stage.card_metrics(card)}, HEADLINE)
        write_json(results_file(STAGE), {"stats": stats, "difficulty": card})
        run.log_dict(stats, "data_stats.json")
        run.log_dict(card, "difficulty.json")
    print(f"data: {metrics}")
    return stats


if __name__ == "__main__":
    args = stage_args(__doc__)
    with stage_main(STAGE):
        data_flow(args.params, parse_overrides(args.overrides))
