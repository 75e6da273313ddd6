"""bulk_changes.compute_log_files: a run worker's output goes to the compute log files
Dagster's local manager reads back (the UI's logs), with no mirror process started."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bulk_changes.compute_log_files import capture_logs
from bulk_changes.dagster_private import LocalComputeLogManager

LOG_KEY = ["run-1", "compute_logs", "abcdefgh"]


def no_process(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"a process was started: {args}")


def test_output_of_python_and_of_the_file_descriptors_is_in_the_logs_the_ui_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = LocalComputeLogManager(base_dir=str(tmp_path))
    monkeypatch.setattr(subprocess, "Popen", no_process)
    with capture_logs(manager, LOG_KEY):
        print("from python", flush=True)
        os.write(sys.stdout.fileno(), b"from the descriptor\n")  # fd 1 in a run worker
        print("an error", file=sys.stderr, flush=True)
    data = manager.get_log_data(LOG_KEY)
    assert data.stdout == b"from python\nfrom the descriptor\n"
    assert data.stderr == b"an error\n"
    assert manager.is_capture_complete(LOG_KEY)


def test_the_process_output_is_its_own_again_after_the_capture(tmp_path: Path) -> None:
    manager = LocalComputeLogManager(base_dir=str(tmp_path))
    with capture_logs(manager, LOG_KEY):
        print("captured", flush=True)
    print("after", flush=True)
    assert manager.get_log_data(LOG_KEY).stdout == b"captured\n"


def test_another_compute_log_manager_captures_as_its_class_does(tmp_path: Path) -> None:
    class Recording(LocalComputeLogManager):
        keys: list[list[str]] = []

        @contextmanager
        def capture_logs(self, log_key):  # type: ignore[no-untyped-def, override]
            self.keys.append(list(log_key))
            yield "its own context"

    with capture_logs(Recording(base_dir=str(tmp_path)), LOG_KEY) as context:
        assert context == "its own context"
    assert Recording.keys == [LOG_KEY]
