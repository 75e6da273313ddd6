"""What a run worker imports when it loads the code location: every run pays it at start-up,
so a module the processing path never uses stays out of it."""

from __future__ import annotations

import pytest

from bulk_changes_tests.helpers import printed_by_a_fresh_interpreter


def _imported_after_loading_the_definitions(module: str) -> bool:
    probe = f"import sys, bulk_changes.definitions; print({module!r} in sys.modules)"
    printed = printed_by_a_fresh_interpreter(probe)
    assert printed in {"True", "False"}
    return printed == "True"


@pytest.mark.parametrize("module", ["pandas", "dagster_aws", "boto3"])
def test_loading_the_definitions_leaves_out_modules_the_processing_path_never_uses(
    module: str,
) -> None:
    assert not _imported_after_loading_the_definitions(module)


def test_the_probe_sees_a_module_the_definitions_do_import() -> None:
    assert _imported_after_loading_the_definitions("sqlalchemy")
