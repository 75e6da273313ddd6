"""Intake: files and messages become a stored bulk change with one device change per row.

Files are CSV, .xlsx (read with pandas, every cell as text) or JSON. Invalid rows are kept
as ERROR device changes naming the row, the field and the reason; valid rows go on. A
request is refused as a whole when it cannot be read as rows, or when no row is valid
(then nothing is stored).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bulk_changes.db.repository import Repository
from bulk_changes.domain.change_types import (
    DEVICE_KEY_FIELD,
    ChangeType,
    Integration,
    ValidRow,
    allowed_columns,
    field_label,
    parse_change_type,
    parse_integration,
    validate_row,
)
from bulk_changes.domain.errors import (
    BulkChangeError,
    ConfigurationError,
    DevicesHeldElsewhere,
    IdempotencyConflict,
    InputFileError,
    ValidationError,
)
from bulk_changes.domain.idempotency import request_digest
from bulk_changes.domain.model import INVENTORY_COLUMNS, BulkChange, NewDeviceChange
from bulk_changes.domain.settings import Settings
from bulk_changes.domain.state_machine import DeviceStatus
from bulk_changes.domain.validation import (
    check_iccid,
    check_imei,
    check_length,
    check_msisdn,
    check_service_id,
    check_text,
    kind_of,
    normalize_status,
    text_of,
)

MAX_ROWS = 100_000
XLSX_SUFFIXES = (".xlsx", ".xlsm")


@dataclass(frozen=True)
class SubmitRequest:
    tenant: str
    change_type: str
    integration: str
    rows: Sequence[Mapping[str, Any]]
    notify: Sequence[str] = ()
    idempotency_key: str | None = None
    requested_by: str | None = None
    source: str = "cli"


@dataclass(frozen=True)
class SubmitResult:
    id: int
    accepted: int
    rejected: list[dict[str, Any]] = field(default_factory=list)
    created: bool = True

    def as_json(self) -> dict[str, Any]:
        # "repeat": the idempotency key had stored this request already; nothing new stored
        return {
            "id": self.id,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "repeat": not self.created,
        }


class IntakeError(BulkChangeError):
    """The whole request is refused (unknown tenant, unknown change type...)."""


# ---- reading files ---------------------------------------------------------------------


class CsvRows(list[dict[str, str]]):
    """A file's rows, with the line of the file each starts on (``lines``).

    For a CSV file the lines are worked out only when asked for (an error naming a row's
    line): pandas, which reads the file, does not tell them, and finding them costs a pass
    over the text that a request without refused rows never needs."""

    def __init__(
        self,
        rows: Sequence[dict[str, str]] = (),
        lines: list[int] | None = None,
        locate: Callable[[], list[int]] | None = None,
    ) -> None:
        super().__init__(rows)
        self._lines = lines
        self._locate = locate

    @property
    def lines(self) -> list[int]:
        if self._lines is None:
            self._lines = self._locate() if self._locate is not None else []
            self._locate = None  # the text it holds is no longer needed
        return self._lines


def _column_shown(column: str) -> str:
    label = field_label(column)
    return repr(label) if label == column else label  # field_label already quoted it


def line_of(rows: Sequence[Any], index: int) -> int | None:
    """The file line of ``rows[index]`` when the rows came from a CSV or .xlsx file."""
    lines = getattr(rows, "lines", None)
    return lines[index] if lines is not None and index < len(lines) else None


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{name}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as UTF-8"
        ) from exc
    return text.removeprefix("\ufeff")


@dataclass(frozen=True)
class CsvShape:
    """Where a CSV text's records start and how many fields each has, as pandas' reader
    (and the ``csv`` module) split them: a quote opening a field keeps its commas and line
    breaks in it (``""`` inside is a quote), any other quote is a character of its field,
    and a line break elsewhere (CR, LF or CRLF) ends the record, a blank line being a
    record of one empty field."""

    starts: list[int]  # the file line each record starts on
    fields: list[int]  # each record's number of fields
    unclosed: int | None  # the line of a quoted field the text ends inside, if any


_QUOTE_OR_COMMA = re.compile(r'[",]')


def csv_shape(text: str) -> CsvShape:
    starts: list[int] = []
    fields: list[int] = []
    quoted_at: int | None = None  # inside a quoted field opened on this line
    count = 0
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if quoted_at is None:
            starts.append(number)
            if '"' not in line:  # the usual line: its commas are its fields
                fields.append(line.count(",") + 1)
                continue
            count, state = 1, _START
        else:
            state = _QUOTED  # the field goes on past the line break
        # Only quotes and commas change the state; any other character at a field's start
        # (or after a closing quote) makes the field unquoted: seen as a gap between them.
        expected = 0  # where the next character makes a difference
        for match in _QUOTE_OR_COMMA.finditer(line):
            at, char = match.start(), match.group()
            if at > expected and state in (_START, _CLOSED):
                state = _PLAIN
            if state == _QUOTED:
                if char == '"':
                    state = _CLOSED
            elif char == ",":
                count += 1
                state = _START
            elif state == _START:
                state, quoted_at = _QUOTED, number
            elif state == _CLOSED:
                state = _QUOTED  # a doubled quote: a quote inside the quoted field
            expected = at + 1
        if state == _QUOTED:
            continue  # the line break belongs to the field
        fields.append(count)
        quoted_at = None
    return CsvShape(starts, fields, quoted_at)


_START, _PLAIN, _QUOTED, _CLOSED = range(4)


def read_csv_rows(
    data: bytes, name: str, allowed: Sequence[str], required: Sequence[str]
) -> CsvRows:
    """Rows of a CSV as dicts of text, read with pandas, with the file-level checks:
    header, width, emptiness. Blank records are skipped."""
    import pandas as pd

    text = _decode(data, name)
    options: dict[str, Any] = {
        "header": None,  # the header is checked here, duplicates and all
        "dtype": str,  # every cell as text: leading zeros and 20-digit ICCIDs intact
        "keep_default_na": False,  # "NA", "null", "nan" are text too
        "na_filter": False,  # and an empty cell is "", as a missing one
        "skip_blank_lines": False,  # one pandas record per CSV record: lines found later
        "engine": "c",
    }
    try:
        chunks = pd.read_csv(io.StringIO(text), chunksize=MAX_ROWS + 2, **options)
        columns: list[str] | None = None
        rows: list[dict[str, str]] = []
        kept: list[int] = []  # each row's record number (the header is record 0)
        record = 0
        for chunk in chunks:
            for values in chunk.to_numpy(dtype=object).tolist():
                if columns is None:
                    columns = [str(h).strip().lower() for h in values]
                    _check_header(name, columns, allowed, required)
                elif "".join(values).strip():  # a blank record is skipped
                    rows.append(dict(zip(columns, values, strict=False)))
                    kept.append(record)
                    if len(rows) > MAX_ROWS:
                        raise InputFileError(f"{name}: more than {MAX_ROWS} rows; split the file")
                record += 1
    except pd.errors.EmptyDataError:
        if not text:
            raise InputFileError(f"{name}: the file is empty") from None
        _check_header(name, [], allowed, required)  # a blank first line: no header
        raise
    except pd.errors.ParserError as exc:
        raise _unreadable(text, name, allowed, required, exc) from None
    if not rows:
        raise InputFileError(f"{name}: no rows after the header")

    def locate() -> list[int]:
        starts = csv_shape(text).starts
        return [starts[r] for r in kept]

    return CsvRows(rows, locate=locate)


def _unreadable(
    text: str, name: str, allowed: Sequence[str], required: Sequence[str], exc: Exception
) -> InputFileError:
    """The error for a CSV text pandas could not read: the header's own first (as a
    reader going line by line finds it), then the record at fault, named by its line."""
    import pandas as pd

    shape = csv_shape(text)
    try:
        header = pd.read_csv(
            io.StringIO(text),
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            nrows=1,
            engine="c",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        pass  # the header itself is at fault (an unclosed quote): said below
    else:
        columns = [str(h).strip().lower() for h in header.iloc[0].tolist()] if len(header) else []
        _check_header(name, columns, allowed, required)
    width = shape.fields[0] if shape.fields else 0
    # (with a quoted field never closed, the last record has a start but no count)
    for start, count in zip(shape.starts[1:], shape.fields[1:], strict=False):
        if count > width:
            return InputFileError(
                f"{name}: line {start} has {count} fields, the header has {width}"
            )
    if shape.unclosed is not None:
        return InputFileError(
            f'{name}: line {shape.unclosed} opens a quoted field that no " closes; '
            'close it (a quote inside a quoted field is written "")'
        )
    return InputFileError(f"{name}: not readable as CSV: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_xlsx_rows(
    data: bytes, name: str, allowed: Sequence[str], required: Sequence[str]
) -> CsvRows:
    """Rows of the first sheet of an .xlsx workbook, every cell as text; ``lines`` holds
    each row's number in the sheet."""
    import pandas as pd

    try:
        frame = pd.read_excel(io.BytesIO(data), header=None, dtype=object, engine="openpyxl")
    except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
        raise InputFileError(
            f"{name}: not readable as an .xlsx workbook ({exc}); save it as .xlsx or CSV"
        ) from exc
    if frame.empty:
        raise InputFileError(f"{name}: the file is empty")
    cells = [[_cell_text(v) for v in values] for values in frame.to_numpy().tolist()]
    header = cells[0]
    while header and not header[-1].strip():
        header = header[:-1]  # a spreadsheet's trailing empty columns
    columns = [h.strip().lower() for h in header]
    _check_header(name, columns, allowed, required)
    rows = CsvRows(lines=[])
    for number, values in enumerate(cells[1:], start=2):
        if all(not v.strip() for v in values):
            continue
        extra = [v for v in values[len(columns) :] if v.strip()]
        if extra:
            raise InputFileError(
                f"{name}: row {number} has {len(columns) + len(extra)} cells, the header has {len(columns)}"
            )
        rows.append(dict(zip(columns, values, strict=False)))
        rows.lines.append(number)
        if len(rows) > MAX_ROWS:
            raise InputFileError(f"{name}: more than {MAX_ROWS} rows; split the file")
    if not rows:
        raise InputFileError(f"{name}: no rows after the header")
    return rows


def _check_header(
    name: str, columns: Sequence[str], allowed: Sequence[str], required: Sequence[str]
) -> None:
    """The header's checks, shared by CSV and .xlsx."""
    unknown = [c for c in columns if c not in allowed]
    if unknown or not columns or any(not c for c in columns):
        raise InputFileError(
            # field_label: a header cell can be a megabyte of anything; shown cut short
            f"{name}: wrong header: unknown column(s) "
            f"{', '.join(_column_shown(c) for c in unknown[:10]) or '(empty)'}; "
            f"expected columns among: {', '.join(allowed)}"
        )
    if len(set(columns)) != len(columns):
        raise InputFileError(f"{name}: wrong header: a column appears twice")
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputFileError(f"{name}: wrong header: missing column(s) {', '.join(missing)}")


def _cell_text(value: Any) -> str:
    """A spreadsheet cell as the text the operator sees. Text cells stay as they are;
    whole numbers lose no ".0"; a number too long for a float's 15 digits (an ICCID typed
    into a number cell) keeps its rounded form, which validation then refuses."""
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        midnight = value.time() == datetime.min.time()
        return value.date().isoformat() if midnight else value.isoformat()
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def read_table_file(
    path: Path, allowed: Sequence[str], required: Sequence[str]
) -> list[dict[str, str]]:
    """A CSV or .xlsx file's rows (by its suffix), with their lines."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror}") from exc
    if path.suffix.lower() in XLSX_SUFFIXES:
        return read_xlsx_rows(data, path.name, allowed, required)
    return read_csv_rows(data, path.name, allowed, required)


def read_json_rows(data: bytes, name: str) -> list[dict[str, Any]]:
    text = _decode(data, name)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{name}: not valid JSON: {exc}") from exc
    except RecursionError:
        raise InputFileError(f"{name}: not readable: JSON nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InputFileError(f"{name}: not readable as JSON: {exc}") from None
    if isinstance(parsed, dict):
        parsed = parsed.get("devices")
    if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
        raise InputFileError(f'{name}: expected a list of device objects (or {{"devices": [...]}})')
    if not parsed:
        raise InputFileError(f"{name}: no devices")
    return parsed


def read_request_file(
    path: str | Path, change_type: ChangeType, integration: Integration
) -> list[dict[str, Any]]:
    """A request file's rows: JSON, .xlsx, or CSV (any other suffix)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputFileError(f"{path}: cannot read: {exc.strerror}") from exc
        return read_json_rows(data, path.name)
    columns = allowed_columns(change_type, integration)
    return read_table_file(path, columns, [DEVICE_KEY_FIELD[integration]])


# ---- inventory --------------------------------------------------------------------------


def inventory_rows(rows: Sequence[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    """Checked inventory rows ready to upsert; any bad row refuses the import, naming it."""
    problems: list[str] = []
    result: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(rows):
        number = line_of(rows, index) or index + 2
        row, refused = _inventory_cells(raw)
        problems += [f"line {number}: {field}: {reason}" for field, reason in refused]
        if refused:
            continue
        integration = row.get("integration")
        if integration not in ("jasper", "telegence"):
            problems.append(
                f"line {number}: integration: must be jasper or telegence, got {integration!r}"
            )
            continue
        key_field = DEVICE_KEY_FIELD[Integration(integration)]
        key = row.get(key_field)
        if not key:
            problems.append(f"line {number}: {key_field}: required for {integration} devices")
            continue
        checks = [
            ("iccid", check_iccid),
            ("msisdn", check_msisdn),
            ("imei", check_imei),
            ("revio_service_id", check_service_id),
        ]
        for field_name, check in checks:
            value = row.get(field_name)
            if value and (reason := check(value)):
                problems.append(f"line {number}: {field_name}: {reason}")
        if row.get("status"):
            status = normalize_status(integration, row["status"])
            if status is None:
                problems.append(
                    f"line {number}: status: {row['status']!r} is not a {integration} status"
                )
            row["status"] = status
        service = row.get("revio_service_id")
        if service is not None and check_service_id(service) is None:
            row["revio_service_id"] = int(service)
        if (integration, key) in seen:
            problems.append(f"line {number}: {key_field}: {key} appears twice")
        seen.add((integration, key))
        row["device_key"] = key
        result.append(row)
    if problems:
        raise InputFileError(_problem_list(name, problems))
    return result


def _inventory_cells(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The row's cells as stripped text (empty as None), and the cells refused as such."""
    row: dict[str, Any] = {}
    refused: list[tuple[str, str]] = []
    for key, value in raw.items():
        text = None if value is None else text_of(value)
        if value is not None and text is None:
            refused.append((field_label(key), f"must be text or a number, got {kind_of(value)}"))
            continue
        text = (text or "").strip()
        reason = check_text(text) or check_length(str(key), text)
        if reason:
            refused.append((field_label(key), reason))
            continue
        row[key] = text or None
    return row, refused


def _problem_list(name: str, problems: Sequence[str]) -> str:
    shown = "\n  ".join(problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return f"{name}: {len(problems)} invalid row(s):\n  {shown}{more}"


def read_inventory_file(path: str | Path) -> list[dict[str, str]]:
    """An inventory file's rows (CSV or .xlsx), checked as a whole by ``inventory_rows``."""
    return read_table_file(Path(path), INVENTORY_COLUMNS, ["integration"])


def import_inventory(
    repo: Repository, tenant: str, path: str | Path, settings: Settings | None = None
) -> tuple[int, int]:
    """Import a tenant's devices from a CSV or .xlsx file.

    With ``settings``, a device that another tenant holds on the same carrier account is
    refused: a device belongs to one tenant, and the inventory is what keeps tenants apart.
    """
    path = Path(path)
    raw = read_inventory_file(path)
    rows = inventory_rows(raw, path.name)
    sharing = _tenants_sharing_carrier_accounts(settings, tenant) if settings else None
    try:
        return repo.upsert_devices(tenant, rows, exclusive_of=sharing)
    except DevicesHeldElsewhere as exc:
        # Named by line and key only: never the other tenant's name or its data.
        taken = set(exc.devices)
        problems = [
            f"line {line_of(raw, i) or i + 2}: {DEVICE_KEY_FIELD[Integration(r['integration'])]}: "
            f"{r['device_key']} is held by another tenant on the same {r['integration']} "
            "account (a device belongs to one tenant)"
            for i, r in enumerate(rows)
            if (r["integration"], r["device_key"]) in taken
        ]
        raise InputFileError(_problem_list(path.name, problems)) from None


def _tenants_sharing_carrier_accounts(settings: Settings, tenant_id: str) -> dict[str, list[str]]:
    """Per integration, the other tenants whose carrier account is the tenant's own."""
    tenant = settings.tenant(tenant_id)
    sharing: dict[str, list[str]] = {}
    for integration in Integration:
        try:
            mine = tenant.carrier_account(integration.value).name
        except ConfigurationError:
            continue
        others = []
        for other in settings.tenants.values():
            if other.id == tenant_id:
                continue
            try:
                if other.carrier_account(integration.value).name == mine:
                    others.append(other.id)
            except ConfigurationError:
                continue
        sharing[integration.value] = others
    return sharing


# ---- submitting -------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedBulkChange:
    """A checked request, not stored: what ``submit`` stores and ``--dry-run`` shows."""

    tenant_id: str
    change_type: ChangeType
    integration: Integration
    changes: list[NewDeviceChange]
    inventory: Mapping[str, Mapping[str, Any]]
    key: str
    digest: str

    @property
    def rejected(self) -> list[dict[str, Any]]:
        return [
            {"row": c.row_number, "field": c.error_field, "reason": c.error}
            for c in self.changes
            if c.status is DeviceStatus.ERROR
        ]


class NoValidRows(IntakeError):
    """Every row was refused: nothing is stored. ``rejected`` holds each row's reason."""

    def __init__(self, rejected: list[dict[str, Any]]) -> None:
        shown = "\n  ".join(
            f"row {r['row']}{_line_note(r)}: {r['field']}: {r['reason']}" for r in rejected
        )
        super().__init__(
            f"no valid row in the request ({len(rejected)} refused); nothing stored or "
            f"queued. Fix the rows and submit again:\n  {shown}"
        )
        self.rejected = rejected


def _line_note(item: Mapping[str, Any]) -> str:
    return f" (line {item['line']})" if "line" in item else ""


def submit_bulk_change(
    repo: Repository, settings: Settings, request: SubmitRequest, *, enqueue: bool = False
) -> SubmitResult:
    """Store the request as a bulk change; refused (:class:`NoValidRows`) if no row is
    valid. ``enqueue``: its queue message goes into the queue outbox in the same
    transaction (``bulk_changes.db.queue_outbox``)."""
    planned = plan_bulk_change(repo, settings, request)
    if isinstance(planned, SubmitResult):
        return planned
    if len(planned.rejected) == len(planned.changes):
        rejected = planned.rejected
        for item in rejected:
            line = line_of(request.rows, int(item["row"]) - 1)
            if line is not None:
                item["line"] = line
        raise NoValidRows(rejected)
    key, digest = planned.key, planned.digest
    notify = list(dict.fromkeys(list(request.notify)))
    bulk_id, created = repo.create_bulk_change(
        tenant_id=planned.tenant_id,
        change_type=planned.change_type.value,
        integration=planned.integration.value,
        notify=notify,
        idempotency_key=key or None,
        requested_by=request.requested_by,
        source=request.source,
        changes=planned.changes,
        request_digest=digest,
        enqueue=enqueue,
    )
    if not created and key:
        # Another producer stored the same key first, while this one was validating.
        existing = repo.find_by_idempotency_key(planned.tenant_id, key)
        if existing is not None:
            _same_request(existing, key, planned.change_type, planned.integration, digest)
    return _result_of(repo, bulk_id, created=created, rows=request.rows)


def plan_bulk_change(
    repo: Repository, settings: Settings, request: SubmitRequest
) -> PlannedBulkChange | SubmitResult:
    """Check every row against the rules and the tenant's inventory, storing nothing.
    -> the plan, or the stored bulk change its idempotency key names."""
    try:
        change_type = parse_change_type(request.change_type)
        integration = parse_integration(request.integration)
        tenant = settings.tenant(request.tenant)
        tenant.carrier_account(integration.value)
    except (ValueError, ConfigurationError) as exc:
        raise IntakeError(str(exc)) from exc
    _check_request_texts(request)
    # An empty key is no key: stored as "", a second empty key would hit the unique constraint.
    key = request.idempotency_key.strip() if isinstance(request.idempotency_key, str) else ""
    digest = request_digest(request.rows)
    if key:
        existing = repo.find_by_idempotency_key(tenant.id, key)
        if existing:
            _same_request(existing, key, change_type, integration, digest)
            return _result_of(repo, existing.id, created=False, rows=request.rows)
        # The tenant is part of what a key is bound to: the same key under another tenant is
        # a producer resending a request with the tenant changed. Named by its bulk change
        # only, never by the other tenant's name.
        elsewhere = repo.idempotency_key_elsewhere(tenant.id, key)
        if elsewhere is not None:
            raise IdempotencyConflict(key, elsewhere, "another tenant")
    if not request.rows:
        raise IntakeError("no devices in the request")
    if len(request.rows) > MAX_ROWS:
        raise IntakeError(f"more than {MAX_ROWS} devices in one request; split it")

    today = datetime.now(UTC).date()
    checked: list[ValidRow | list[ValidationError]] = [
        validate_row(change_type, integration, row, number, today)
        for number, row in enumerate(request.rows, start=1)
    ]
    keys = [c.device_key for c in checked if isinstance(c, ValidRow)]
    inventory = repo.devices_by_key(tenant.id, integration.value, keys)
    seen: set[str] = set()
    changes: list[NewDeviceChange] = []
    key_field = DEVICE_KEY_FIELD[integration]
    for number, (raw, result) in enumerate(zip(request.rows, checked, strict=True), start=1):
        if isinstance(result, ValidRow):
            errors = _context_errors(
                result, seen, inventory, tenant.rate_plan_billing, key_field, change_type
            )
            seen.add(result.device_key)
            if not errors:
                changes.append(
                    NewDeviceChange(
                        row_number=number,
                        device_key=result.device_key,
                        device_id=inventory[result.device_key]["id"],
                        request=result.request,
                    )
                )
                continue
        else:
            errors = result
        first = errors[0]
        reason = "; ".join(f"{e.field}: {e.reason}" for e in errors)
        changes.append(
            NewDeviceChange(
                row_number=number,
                device_key=_shown_key(raw.get(key_field)),
                device_id=None,
                request=_shown_request(raw),
                status=DeviceStatus.ERROR,
                error=reason if len(errors) > 1 else first.reason,
                error_field=first.field[:64],
            )
        )
    return PlannedBulkChange(tenant.id, change_type, integration, changes, inventory, key, digest)


# The AMOP columns of the request's own texts (bulk_changes.idempotency_key, requested_by).
_REQUEST_TEXT_LIMIT = 255


def _check_request_texts(request: SubmitRequest) -> None:
    """The request's own texts, refused as the rows' are: a NUL in an idempotency key fails
    on PostgreSQL, and a newline in a notify address would end up in a mail header."""
    texts = [("idempotency_key", request.idempotency_key), ("requested_by", request.requested_by)]
    texts += [("notify", address) for address in request.notify]
    for name, value in texts:
        if value is None:
            continue
        if not isinstance(value, str):
            raise IntakeError(f"{name}: must be text, got {kind_of(value)}")
        reason = check_text(value)
        if reason is None and len(value) > _REQUEST_TEXT_LIMIT:
            reason = f"at most {_REQUEST_TEXT_LIMIT} characters, got {len(value)}"
        if reason:
            raise IntakeError(f"{name}: {reason}")


def _same_request(
    existing: BulkChange, key: str, change_type: ChangeType, integration: Integration, digest: str
) -> None:
    """Refuses a key sent again with another request than the one it stored."""
    differs = []
    if existing.change_type != change_type.value:
        differs.append(f"change_type {change_type.value}, not {existing.change_type}")
    if existing.integration != integration.value:
        differs.append(f"integration {integration.value}, not {existing.integration}")
    # None: stored before digests existed; nothing to compare the devices with.
    if existing.request_digest is not None and existing.request_digest != digest:
        differs.append("other devices or values")
    if differs:
        raise IdempotencyConflict(key, existing.id, "; ".join(differs))


# What an ERROR row keeps of what was sent: enough to recognise it, nothing that breaks
# storing it (PostgreSQL's 64-character key column, NUL, objects nested 10,000 deep).
_SHOWN_TEXT = 200


def _shown_key(value: Any) -> str | None:
    text = text_of(value) if value is not None else None
    if not text or check_text(text) or len(text) > 64:
        return None
    return text.strip() or None


def _shown_request(raw: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, value in list(raw.items())[:50]:
        if value is None or value == "":
            continue
        text = text_of(value)
        if text is None:
            shown[field_label(key)] = f"({kind_of(value)})"
        elif check_text(text):
            shown[field_label(key)] = text[:_SHOWN_TEXT].encode("utf-8", "replace").decode("utf-8")
        else:
            shown[field_label(key)] = text[:_SHOWN_TEXT]
    return shown


def _context_errors(
    row: ValidRow,
    seen: set[str],
    inventory: Mapping[str, Mapping[str, Any]],
    billing: Mapping[str, int],
    key_field: str,
    change_type: ChangeType,
) -> list[ValidationError]:
    if row.device_key in seen:
        return [
            ValidationError(
                row.row, key_field, f"{row.device_key} appears twice in this bulk change"
            )
        ]
    if row.device_key not in inventory:
        return [
            ValidationError(
                row.row, key_field, f"{row.device_key} is not in the tenant's inventory"
            )
        ]
    if change_type is ChangeType.CARRIER_RATE_PLAN and row.request["rate_plan"] not in billing:
        return [
            ValidationError(
                row.row,
                "rate_plan",
                f"{row.request['rate_plan']!r} has no billing mapping for this tenant (rate_plan_billing)",
            )
        ]
    return []


def _result_of(
    repo: Repository, bulk_id: int, created: bool, rows: Sequence[Any] = ()
) -> SubmitResult:
    rejected = repo.intake_rejections(bulk_id)
    for item in rejected:
        # Rows from a CSV file: the line too, which differs from the row after a quoted newline.
        line = line_of(rows, int(item["row"]) - 1)
        if line is not None:
            item["line"] = line
    total = sum(repo.counts(bulk_id).values())
    return SubmitResult(
        id=bulk_id, accepted=total - len(rejected), rejected=rejected, created=created
    )
