#!/usr/bin/env bash
# Per-pool limits of the ops' concurrency pools (the instance YAML has only a default).
# Run once against the production instance (DAGSTER_HOME with deploy's dagster.yaml), and
# again whenever a limit changes; `dagster instance concurrency get --all` shows them.
# bulk_changes_devices: each run works on two batches at once, so twice the runs allowed at
# once (deploy/dagster.yaml: 10); fewer leaves the accounts of the runs beyond it idle.
set -euo pipefail
dagster instance concurrency set bulk_changes_devices "${BULK_CHANGES_DEVICES_POOL:-20}"
