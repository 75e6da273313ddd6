"""What the fork server imports before it forks run workers (``run_worker_preload``)."""

from __future__ import annotations

import subprocess
import sys


def test_a_forked_run_worker_reads_its_tenants_file_without_importing_anything() -> None:
    # a run's first op reads its tenant: the models of the file are the fork server's
    check = (
        "import sys\n"
        "import bulk_changes.run_worker_preload\n"
        "from bulk_changes.tenant_file import default_config_path, load_settings\n"
        "before = set(sys.modules)\n"
        "load_settings(default_config_path())\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
