"""The CLI as a user runs it: a subprocess with its own home, the real local SQS server,
SQLite or PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulk_changes.launcher.cli_process import CLEARED, cli_command
from bulk_changes_tests.helpers import iccid

__all__ = ["CLEARED", "Cli", "cli_command", "submit_args", "unique_queue", "write_inventory"]


@dataclass
class Cli:
    """Runs ``bulk-changes`` in ``cwd`` with ``env`` (the home under ``cwd``)."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def in_folder(cls, folder: Path, **extra: str) -> Cli:
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env["BULK_CHANGES_HOME"] = str(folder / "home")
        env.update(extra)
        return cls(folder, env)

    @property
    def home(self) -> Path:
        return Path(self.env["BULK_CHANGES_HOME"])

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli_command(), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def unique_queue() -> dict[str, str]:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    return {"BULK_CHANGES_QUEUE": name, "BULK_CHANGES_DLQ": f"{name}-dlq"}


def write_inventory(path: Path, count: int, integration: str = "jasper") -> Path:
    lines = ["iccid,integration,status,username,rate_plan,revio_service_id"]
    lines += [
        f"{iccid(i)},{integration},ACTIVATED,user-{i},IOT_1GB,{700 + i}" for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def submit_args(path: Path, change_type: str = "username_cost_center") -> list[str]:
    return [
        "submit",
        str(path),
        "--tenant",
        "acme",
        "--type",
        change_type,
        "--integration",
        "jasper",
    ]
