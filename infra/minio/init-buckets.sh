#!/bin/sh
# One-shot job (service minio-init): create the buckets and the service account that MLflow,
# the worker and DVC use, so the root credentials stay with the MinIO admin. Idempotent:
# safe on every `docker compose up`.
set -eu

: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER in infra/.env}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in infra/.env}"
: "${PIMC_S3_ACCESS_KEY:?set PIMC_S3_ACCESS_KEY in infra/.env}"
: "${PIMC_S3_SECRET_KEY:?set PIMC_S3_SECRET_KEY in infra/.env}"

mc alias set pimc http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
# mlflow: MLflow's proxied artifact store; dvc: the DVC remote (s3://dvc/pimc).
mc mb --ignore-existing pimc/mlflow pimc/dvc
mc admin user add pimc "$PIMC_S3_ACCESS_KEY" "$PIMC_S3_SECRET_KEY"
# Attaching a policy that is already attached is an error in mc; on a re-run that is fine.
if ! out=$(mc admin policy attach pimc readwrite --user "$PIMC_S3_ACCESS_KEY" 2>&1); then
  case "$out" in
    *already*) ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
echo "minio-init: buckets mlflow, dvc and user $PIMC_S3_ACCESS_KEY ready"
