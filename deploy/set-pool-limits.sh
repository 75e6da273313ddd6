#!/usr/bin/env bash
# Per-pool limits of the ops' concurrency pools (the instance YAML has only a default).
# Run once against the production instance (DAGSTER_HOME with deploy's dagster.yaml), and
# again whenever a limit changes; `dagster instance concurrency get --all` shows them.
set -euo pipefail
dagster instance concurrency set bulk_changes_carrier "${BULK_CHANGES_CARRIER_POOL:-6}"
dagster instance concurrency set bulk_changes_billing "${BULK_CHANGES_BILLING_POOL:-6}"
