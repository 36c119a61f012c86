# Prefect worker image = the project image: it runs the repo's flows (flows/*.py) in
# subprocesses, so it needs pimc and its pinned dependencies, not just Prefect.
# Build context is the repo root (see docker-compose.yml); worker.Dockerfile.dockerignore keeps
# the virtualenv, data and local MLflow stores out of it.
FROM python:3.11.13-slim-bookworm

# git: DVC needs a git repo to run `dvc repro`/`dvc pull` inside the image.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# torch first and pinned, as in the Makefile: otherwise pip may pick a different build to
# satisfy a looser range elsewhere. PyPI's Linux wheel is the CUDA build; for a CPU-only image
# pass --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index>.
ARG TORCH_INDEX_URL=""
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"

RUN useradd --create-home --uid 10001 pimc
WORKDIR /opt/pimc
COPY --chown=pimc:pimc . /opt/pimc
# [s3]: dvc-s3, so the worker can `dvc push`/`dvc pull` against the MinIO/S3 remote.
RUN pip install --no-cache-dir -e ".[s3]" \
    && pip check \
    && mkdir -p /opt/pimc/data && chown pimc:pimc /opt/pimc/data

USER pimc
# A git identity: `dvc exp run` (retrain with overrides) commits its baseline.
ENV DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GIT_AUTHOR_NAME=pimc-worker GIT_AUTHOR_EMAIL=pimc-worker@localhost \
    GIT_COMMITTER_NAME=pimc-worker GIT_COMMITTER_EMAIL=pimc-worker@localhost
# The worker command (pool, type, health check) is set in docker-compose.yml.
CMD ["prefect", "worker", "start", "--pool", "pimc-process", "--type", "process"]
