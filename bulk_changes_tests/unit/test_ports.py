"""The adapters and the tests' fakes keep to the ports the processing layer depends on,
and the domain stays strictly typed: mypy says so (it is a dev dependency)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]


def test_adapters_and_fakes_satisfy_the_ports_and_the_domain_is_strictly_typed() -> None:
    # a cache kept between runs: a cold check costs some 30 s, a warm one a second
    cache = os.path.join(tempfile.gettempdir(), "bulk_changes_mypy_cache")
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            cache,
            str(ROOT / "bulk_changes_tests" / "unit" / "ports_check.py"),
            str(ROOT / "bulk_changes" / "domain"),
        ]
    )
    assert status == 0, stdout + stderr
