"""What a run worker imports when it loads the code location: every run pays it at start-up,
so a module the processing path never uses stays out of it."""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_definitions_imports_no_pandas() -> None:
    probe = "import sys, bulk_changes.definitions; print('pandas' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False", out.stderr
