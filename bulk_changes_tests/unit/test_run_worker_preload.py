"""What the fork server imports before it forks run workers (``run_worker_preload``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import bulk_changes
from bulk_changes_tests.helpers import printed_by_a_fresh_interpreter

DEFAULT_DAGSTER_YAML = Path(bulk_changes.__file__).parent / "defaults" / "dagster.yaml"


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
    assert printed_by_a_fresh_interpreter(check) == "[]"


def test_a_forked_run_worker_makes_its_instance_without_importing_path_libraries(
    tmp_path: Path,
) -> None:
    # Dagster gives every instance made from a reference a UPath: universal_pathlib and
    # fsspec, and every distribution's entry points read, are the fork server's
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEFAULT_DAGSTER_YAML, home / "dagster.yaml")
    check = (
        "import sys\n"
        "import bulk_changes.run_worker_preload\n"
        "from dagster import DagsterInstance\n"
        "from dagster._core.instance.ref import InstanceRef\n"
        f"ref = InstanceRef.from_dir({str(home)!r})\n"
        "before = set(sys.modules)\n"
        "DagsterInstance.from_ref(ref)\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in new if m.split('.')[0] in ('upath', 'fsspec')))\n"
    )
    assert printed_by_a_fresh_interpreter(check) == "[]"


def test_a_forked_run_worker_finds_its_job_in_the_repository_the_fork_server_built() -> None:
    check = (
        "import sys\n"
        "import bulk_changes.run_worker_preload\n"
        "from dagster._core.code_pointer import CodePointer\n"
        "from dagster._core.definitions.reconstruct import ReconstructableRepository\n"
        "from bulk_changes.definitions import defs\n"
        "before = set(sys.modules)\n"
        "pointer = CodePointer.from_module('bulk_changes.definitions', 'defs', None)\n"
        "repository = ReconstructableRepository(pointer).get_definition()\n"
        "print(repository is defs.get_repository_def(), sorted(set(sys.modules) - before))\n"
    )
    assert printed_by_a_fresh_interpreter(check) == "True []"
