#!/bin/sh
# First start of the compose stack's PostgreSQL (docker-entrypoint-initdb.d):
# the application's role and database, and Temporal's role (its databases
# are created by the temporal-schema service).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v app_pw="$APP_DB_PASSWORD" -v temporal_pw="$TEMPORAL_DB_PASSWORD" <<'SQL'
CREATE ROLE epi LOGIN PASSWORD :'app_pw';
CREATE DATABASE epi OWNER epi;
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_pw';
SQL
