"""Intake: files refused as a whole with the problem named; rows refused one by one."""

from __future__ import annotations

import json

import pytest

from bulk_changes.domain.errors import InputFileError
from bulk_changes.intake import IntakeError, import_inventory, read_csv_rows, read_request_file
from bulk_changes_tests.conftest import inventory, submit
from bulk_changes_tests.helpers import iccid

COLUMNS = ("iccid", "username", "cost_center_1")


def read(data: bytes):
    return read_csv_rows(data, "changes.csv", COLUMNS, ["iccid"])


def test_wrong_header_names_the_unknown_column():
    with pytest.raises(InputFileError, match="wrong header.*'colour'"):
        read(b"iccid,colour\n1,red\n")


def test_missing_key_column_is_named():
    with pytest.raises(InputFileError, match="missing column.*iccid"):
        read(b"username\nann\n")


def test_header_only_file_has_no_rows():
    with pytest.raises(InputFileError, match="no rows"):
        read(b"iccid,username\n")


def test_empty_file_is_refused():
    with pytest.raises(InputFileError, match="empty"):
        read(b"")


def test_bytes_that_are_not_utf8_are_refused_with_the_position():
    with pytest.raises(InputFileError, match="not UTF-8.*0xff"):
        read(b"iccid,username\n1,\xff\xfe\n")


def test_row_with_too_many_fields_names_the_line():
    with pytest.raises(InputFileError, match="line 3 has 3 fields"):
        read(b"iccid,username\n1,a\n2,b,extra\n")


def test_utf8_bom_and_blank_lines_are_accepted():
    rows = read("\ufefficcid,username\n1,Zoë\n\n".encode())
    assert rows == [{"iccid": "1", "username": "Zoë"}]


def test_cells_are_read_as_the_text_written():
    rows = read(f"iccid,username,cost_center_1\n{iccid(0)},NA,0042\n".encode())
    assert rows == [{"iccid": iccid(0), "username": "NA", "cost_center_1": "0042"}]


def test_a_row_shorter_than_the_header_has_its_missing_cells_empty():
    assert read(b"iccid,username,cost_center_1\n1,ann\n") == [
        {"iccid": "1", "username": "ann", "cost_center_1": ""}
    ]


def test_a_header_naming_a_column_twice_is_refused():
    with pytest.raises(InputFileError, match="a column appears twice"):
        read(b"iccid,username,Username\n1,a,b\n")


def test_a_blank_first_line_is_a_missing_header():
    with pytest.raises(InputFileError, match=r"wrong header: unknown column\(s\) \(empty\)"):
        read(b"\niccid,username\n1,a\n")


def test_rows_of_blank_cells_are_skipped():
    assert read(b"iccid,username\n , \n1,a\n,\n") == [{"iccid": "1", "username": "a"}]


def test_a_row_too_wide_after_a_quoted_line_break_names_its_file_line():
    with pytest.raises(InputFileError, match="line 4 has 3 fields, the header has 2"):
        read(b'iccid,username\n1,"two\nlines"\n2,b,extra\n')


def test_a_quoted_field_never_closed_names_the_line_it_opens_on():
    with pytest.raises(InputFileError, match='line 3 opens a quoted field that no " closes'):
        read(b'iccid,username\n1,a\n2,"b\n3,c\n')


def test_the_lines_of_rows_after_blank_and_quoted_lines_are_their_file_lines():
    from bulk_changes.intake import line_of

    rows = read(b'iccid,username\n\n1,"a\r\nb"\n2,c\r3,d\n')
    assert [line_of(rows, i) for i in range(3)] == [3, 5, 6]


def test_json_file_of_devices(tmp_path):
    from bulk_changes.domain.change_types import ChangeType, Integration

    path = tmp_path / "changes.json"
    path.write_text(json.dumps({"devices": [{"iccid": "1", "username": "a"}]}))
    assert read_request_file(path, ChangeType.USERNAME_COST_CENTER, Integration.JASPER) == [
        {"iccid": "1", "username": "a"}
    ]


def test_invalid_rows_become_error_device_changes_and_valid_rows_go_on(repo, settings):
    repo.upsert_devices("acme", inventory(2, "jasper"))
    result = submit(
        repo,
        settings,
        "device_status",
        "jasper",
        [
            {"iccid": iccid(0), "status": "DEACTIVATED"},
            {"iccid": iccid(1), "status": "NOPE"},
            {"iccid": iccid(0), "status": "ACTIVATED"},
        ],
    )
    assert result.accepted == 1
    assert [(r["row"], r["field"]) for r in result.rejected] == [(2, "status"), (3, "iccid")]
    assert "twice" in result.rejected[1]["reason"]
    assert repo.counts(result.id) == {"NEW": 1, "ERROR": 2}


def test_unknown_tenant_refuses_the_whole_request(repo, settings):
    with pytest.raises(IntakeError, match="unknown tenant"):
        submit(repo, settings, "device_status", "jasper", [{"iccid": iccid(0)}], tenant="nobody")


def test_rate_plan_without_billing_mapping_is_refused_per_row(repo, settings):
    repo.upsert_devices("acme", inventory(2, "jasper"))
    rows = [
        {"iccid": iccid(0), "rate_plan": "MYSTERY"},
        {"iccid": iccid(1), "rate_plan": "IOT_5GB"},
    ]
    result = submit(repo, settings, "carrier_rate_plan", "jasper", rows)
    assert (
        result.rejected[0]["field"] == "rate_plan"
        and "billing mapping" in result.rejected[0]["reason"]
    )


def test_inventory_import_refuses_bad_rows_naming_line_and_field(repo, tmp_path):
    path = tmp_path / "inventory.csv"
    path.write_text(f"iccid,integration,imei\n{iccid(1)},jasper,123\n")
    with pytest.raises(InputFileError, match="line 2: imei"):
        import_inventory(repo, "acme", path)
