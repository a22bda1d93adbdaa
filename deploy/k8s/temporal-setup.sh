#!/bin/sh
# One-shot set-up of the application's Temporal namespace, run with the
# temporalio/admin-tools image (compose: service temporal-setup; Kubernetes:
# Job epi-temporal-setup). Idempotent: runs again without harm.
#   - the namespace, if absent, with NAMESPACE_RETENTION (how long Temporal
#     keeps a closed workflow's history: at least as long as
#     workflows/retention.yaml keeps a closed warning with its history);
#   - the custom search attributes the operator's instance search filters
#     on (Keyword), if absent.
set -eu
: "${TEMPORAL_ADDRESS:?set TEMPORAL_ADDRESS (host:port of the frontend)}"
NAMESPACE=${NAMESPACE:-default}
: "${NAMESPACE_RETENTION:?set NAMESPACE_RETENTION (e.g. 180d)}"
SEARCH_ATTRIBUTES="EpiWorkflow EpiEnterprise EpiDistrict EpiPerson EpiState EpiStatus"

tries=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "Temporal at $TEMPORAL_ADDRESS not healthy after $tries tries" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" -n "$NAMESPACE" >/dev/null 2>&1; then
  echo "namespace $NAMESPACE exists"
else
  temporal operator namespace create --address "$TEMPORAL_ADDRESS" -n "$NAMESPACE" \
    --retention "$NAMESPACE_RETENTION"
fi

existing=$(temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" -n "$NAMESPACE")
for name in $SEARCH_ATTRIBUTES; do
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" -n "$NAMESPACE" \
      --name "$name" --type Keyword
  fi
done
echo "namespace $NAMESPACE ready"
