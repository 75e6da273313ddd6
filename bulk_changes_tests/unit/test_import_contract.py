"""The layering holds (.importlinter): the domain imports nothing of the project, processing
no adapter, the database adapter nothing above it, nothing the command line or the demo,
and no two top-level packages import each other."""

from __future__ import annotations

import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_are_kept(capsys) -> None:
    here = os.getcwd()
    os.chdir(ROOT)  # the contract names the package; its files are those imported here
    try:
        status = lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True)
    finally:
        os.chdir(here)
    assert status == 0, capsys.readouterr().out
