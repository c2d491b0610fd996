#!/bin/sh
# Runs once, when PostgreSQL starts on an empty data directory: one owner role and one database
# per application, passwords from the environment (never written into this file).
set -eu
psql --set=ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=keycloak_password="$KEYCLOAK_DB_PASSWORD" \
    --set=mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE keycloak LOGIN PASSWORD :'keycloak_password';
CREATE DATABASE keycloak OWNER keycloak;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL
