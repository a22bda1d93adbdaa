#!/bin/sh
# Temporal's databases and schemas on the compose stack's PostgreSQL, with
# temporalio/admin-tools (the steps of Temporal's own compose samples).
# Runs again without harm: `create` of an existing database fails and is
# skipped, `setup-schema -v 0.0` is idempotent and `update-schema` applies
# only the versions not yet there.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${POSTGRES_PWD:?}"
export SQL_PASSWORD="$POSTGRES_PWD"
schema=/etc/temporal/schema/postgresql/v12
for pair in temporal:temporal temporal_visibility:visibility; do
  db=${pair%%:*}
  dir=${pair#*:}
  sql() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "${DB_PORT:-5432}" \
      -u "$POSTGRES_USER" --db "$db" "$@"
  }
  sql create || echo "database $db exists"
  sql setup-schema -v 0.0
  sql update-schema -d "$schema/$dir/versioned"
done
echo "Temporal schemas ready"
