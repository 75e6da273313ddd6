"""A request's own texts, empty idempotency keys, and device ownership across carrier
accounts (the AMOP database on SQLite; the CLI and queue paths are in integration)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from bulk_changes.intake import IntakeError, import_inventory
from bulk_changes.resources.tenant_config import default_config_path, expand_env
from bulk_changes.schemas.tenants_file import parse_settings
from bulk_changes_tests.conftest import inventory, submit
from bulk_changes_tests.helpers import iccid


def test_an_empty_idempotency_key_is_no_key(repo, settings):
    repo.upsert_devices("acme", inventory(1, "jasper"))
    rows = [{"iccid": iccid(0), "username": "ann"}]
    first = submit(repo, settings, "username_cost_center", "jasper", rows, key="")
    second = submit(repo, settings, "username_cost_center", "jasper", rows, key="")
    assert first.id != second.id and second.created


def test_a_notify_address_with_a_line_break_is_refused(repo, settings):
    from bulk_changes.intake import SubmitRequest, submit_bulk_change

    repo.upsert_devices("acme", inventory(1, "jasper"))
    request = SubmitRequest(
        "acme",
        "username_cost_center",
        "jasper",
        [{"iccid": iccid(0), "username": "ann"}],
        notify=["ops@acme.example\r\nBcc: all@evil.example"],
    )
    with pytest.raises(IntakeError, match="notify: control character U\\+000D at position 17"):
        submit_bulk_change(repo, settings, request)


def test_a_device_of_a_tenant_on_another_carrier_account_may_be_imported(repo, tmp_path):
    data = expand_env(yaml.safe_load(Path(default_config_path()).read_text(encoding="utf-8")))
    data["accounts"]["jasper-globex"] = copy.deepcopy(data["accounts"]["jasper-main"])
    for tenant in data["tenants"]:
        if tenant["id"] == "globex":
            tenant["accounts"]["jasper"] = "jasper-globex"
    settings = parse_settings(data)
    repo.upsert_devices("acme", inventory(1, "jasper"))
    path = tmp_path / "inventory.csv"
    path.write_text(f"iccid,integration\n{iccid(0)},jasper\n")
    assert import_inventory(repo, "globex", path, settings) == (1, 0)


def test_a_rejected_row_after_a_quoted_newline_names_its_file_line(repo, settings):
    from bulk_changes.intake import NoValidRows, SubmitRequest, read_csv_rows, submit_bulk_change

    repo.upsert_devices("acme", inventory(2, "jasper"))
    data = f'iccid,username\n{iccid(0)},"two\nlines"\n{iccid(1)},"a\x01b"\n'.encode()
    rows = read_csv_rows(data, "c.csv", ("iccid", "username"), ["iccid"])
    # no row is valid: the request is refused as a whole, each row named with its line
    with pytest.raises(NoValidRows) as refused:
        submit_bulk_change(
            repo, settings, SubmitRequest("acme", "username_cost_center", "jasper", rows)
        )
    # row 1 spans lines 2-3 (its newline is refused too); row 2 starts on line 4
    assert [(r["row"], r["line"]) for r in refused.value.rejected] == [(1, 2), (2, 4)]


def test_a_huge_unknown_header_cell_is_named_cut_short():
    from bulk_changes.domain.errors import InputFileError
    from bulk_changes.intake import read_csv_rows

    with pytest.raises(InputFileError) as refused:
        read_csv_rows(b"iccid," + b"x" * 100_000 + b"\n1,2\n", "c.csv", ("iccid",), ["iccid"])
    assert len(str(refused.value)) < 300 and "unknown column" in str(refused.value)
