# MLflow tracking server for infra/docker-compose.yml: Postgres backend (psycopg2), S3/MinIO
# artifacts (boto3). mlflow is pinned to the project's pin in pyproject.toml (checked by
# infra/check_compose.py); fastapi and SQLAlchemy stay in the ranges the project's own
# environment runs its MLflow server with (see docs in pyproject.toml).
FROM python:3.11.13-slim-bookworm

RUN pip install --no-cache-dir \
        "mlflow==3.17.2" \
        "psycopg2-binary==2.9.13" \
        "boto3==1.44.5" \
        "fastapi>=0.139,<0.151" \
        "sqlalchemy>=2.0,<2.1" \
    && useradd --create-home --uid 10001 mlflow

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
# docker-compose.yml sets the real command (backend store, artifact destination, allowed hosts).
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
