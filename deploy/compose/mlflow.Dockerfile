# MLflow with the PostgreSQL driver its backend store needs (the upstream image has none).
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary==2.9.10
