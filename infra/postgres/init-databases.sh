#!/bin/sh
# Runs once, on the first start of an empty Postgres volume (docker-entrypoint-initdb.d):
# one role and one database each for MLflow and Prefect, so neither service can touch the
# other's tables. Passwords come from the container environment (infra/.env); psql variables
# (:'name') quote them, so any character is safe here. To re-run it, remove the volume.
set -eu

: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in infra/.env}"
: "${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD in infra/.env}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v mlflow_pw="$MLFLOW_DB_PASSWORD" -v prefect_pw="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE prefect LOGIN PASSWORD :'prefect_pw';
CREATE DATABASE prefect OWNER prefect;
-- Postgres grants CONNECT on new databases to PUBLIC; keep each role to its own database.
REVOKE CONNECT ON DATABASE mlflow FROM PUBLIC;
REVOKE CONNECT ON DATABASE prefect FROM PUBLIC;
SQL
