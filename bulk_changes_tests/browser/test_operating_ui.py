"""An operator at the Dagster UI, in a real browser (Playwright driving Debian's chromium),
against ``dagster dev`` on the embedded default with the simulators: finds a bulk change
whose devices failed, reads why, retries it, stops one that is running, filters runs by
bulk change. Screenshots of each step go to test-artifacts/browser/ (not committed)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bulk_changes.launcher import stop_stack
from bulk_changes_tests.browser.ui_stack import ARTIFACTS, LOCKED, start_scenario
from bulk_changes_tests.conftest import require_service

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser fixture says what to install
    PlaywrightTimeout = TimeoutError  # noqa: N816


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    scenario = start_scenario(tmp_path_factory.mktemp("ui"))
    yield scenario
    stop_stack(scenario.stack)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    require_service("playwright", sync_api is not None, 'pip install -e ".[dev]"')
    require_service("chromium", Path(CHROMIUM).exists(), "apt-get install chromium (.ci/run)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 850})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


WELCOMED: set[str] = set()


def open_ui(page, url):
    page.goto(url)
    page.wait_for_load_state("networkidle")
    # Dagster's invitation (community, newsletter) covers the first page a new webserver
    # serves, and may come a moment after it: waited for once per webserver
    origin = url.split("/", 3)[2]
    skip = page.get_by_role("button", name="Skip")
    if origin not in WELCOMED:
        with contextlib.suppress(PlaywrightTimeout):
            skip.click(timeout=8000)
        WELCOMED.add(origin)
    elif skip.count():
        skip.click()


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # a dialog that just opened fades in: its animation run to the end, not caught halfway
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), animations="disabled")


def run_row(page, run_id):
    """The run's row in the runs list (a virtualized grid of divs, not a table)."""
    return page.locator(
        "[class*='RunsFeedRow_rowGrid']", has=page.get_by_role("link", name=run_id[:8])
    )


def test_runs_list_shows_a_bulk_change_with_failed_devices_apart_from_a_clean_one(scenario, page):
    failed = scenario.runs_of(scenario.failed)[0]
    clean = scenario.runs_of(scenario.clean)[0]
    open_ui(page, f"{scenario.url}/runs")
    failed_row, clean_row = run_row(page, failed["runId"]), run_row(page, clean["runId"])
    failed_row.get_by_text("bulk_changes/outcome: errors").wait_for()
    shot(page, "01-runs-list")
    assert "bulk_changes/failed_devices: 4" in failed_row.inner_text()
    assert "bulk_changes/outcome: ok" in clean_row.inner_text()


def test_filtering_runs_by_bulk_change_shows_only_its_runs(scenario, page):
    from playwright.sync_api import expect

    failed = scenario.runs_of(scenario.failed)[0]
    clean = scenario.runs_of(scenario.clean)[0]
    open_ui(page, f"{scenario.url}/runs")
    page.get_by_text(f"bulk_changes/bulk_change_id: {scenario.failed}", exact=True).click()
    page.get_by_text("Add tag to filter").click()
    page.get_by_text(f"bulk_changes/bulk_change_id={scenario.failed}").wait_for()
    # The list refetches after the filter is added and shows the unfiltered rows until
    # then ("Refreshing data..."): wait, up to a limit, for the other bulk change's run to go.
    expect(run_row(page, clean["runId"])).to_have_count(0, timeout=20_000)
    shot(page, "02-runs-of-one-bulk-change")
    assert run_row(page, failed["runId"]).count() == 1
    assert run_row(page, clean["runId"]).count() == 0


def open_results(page, scenario, run_id):
    """The run's page, its events filtered to the materializations, the first opened."""
    open_ui(page, f"{scenario.url}/runs/{run_id}")
    page.get_by_placeholder("Filter…").fill("type:ASSET_MATERIALIZATION")
    page.get_by_text("View full message").first.click()
    return page.get_by_role("dialog")


def test_a_failed_devices_reason_and_vendor_code_are_on_its_run_page(scenario, page):
    [run] = scenario.runs_of(scenario.failed)
    dialog = open_results(page, scenario, run["runId"])
    dialog.get_by_text(LOCKED).wait_for()
    shot(page, "03-failed-devices")
    text = dialog.inner_text()
    assert scenario.locked in text and "jasper 400 10000028" in text
    assert "ICCID must have 19 or 20 digits" in text  # the row refused at intake


def test_reexecuting_a_run_retries_the_failed_devices_to_processed_at_the_simulator(scenario, page):
    [run] = scenario.runs_of(scenario.failed)
    open_ui(page, f"{scenario.url}/runs/{run['runId']}")
    page.get_by_role("button", name="Re-execute all (*)").click()
    page.wait_for_url(lambda url: run["runId"] not in url)
    retry = scenario.wait_for_run(scenario.failed, count=2, status="SUCCESS")
    page.get_by_text("Success").first.wait_for()
    shot(page, "04-retry-run")
    states = [scenario.stack.sims.jasper.state(i) for i in scenario.api_failed]
    assert [s["status"] for s in states] == ["DEACTIVATED", "DEACTIVATED"]
    by_device = {
        c.device_key: c.status for c in scenario.stack.repo.device_changes_of(scenario.failed)
    }
    assert [by_device[i] for i in scenario.api_failed] == ["PROCESSED", "PROCESSED"]
    assert retry["tags"]["bulk_changes/tenant"] == "acme"


def test_terminating_a_running_bulk_change_stops_its_calls_within_5_seconds(scenario, page):
    stack = scenario.stack
    devices = [r["iccid"] for r in scenario.jasper[10:130]]  # Jasper, 5 a second: 24 s of work
    bulk_id = stack.submit(
        "acme", "device_status", "jasper", [{"iccid": i, "status": "DEACTIVATED"} for i in devices]
    )
    run = scenario.wait_for_run(bulk_id, count=1, status="STARTED")

    def calls():
        return [c for c in stack.sims.jasper.calls() if c["key"] in set(devices)]

    deadline = time.monotonic() + 60
    while len(calls()) < 5:
        assert time.monotonic() < deadline, (
            f"no calls: {scenario.runs_of(bulk_id)}; jasper calls {len(stack.sims.jasper.calls())}"
        )
        time.sleep(0.2)
    open_ui(page, f"{scenario.url}/runs/{run['runId']}")
    page.get_by_role("button", name="Terminate").click()
    page.get_by_role("dialog").get_by_role("button", name="Terminate").click()
    stopped_at = time.time()
    scenario.wait_for_run(bulk_id, count=1, status="CANCELED", timeout=60)
    time.sleep(max(0.0, stopped_at + 8 - time.time()))
    open_ui(page, f"{scenario.url}/runs/{run['runId']}")
    page.get_by_text("Canceled").first.wait_for()
    shot(page, "05-terminated")
    late = [c for c in calls() if c["t"] > stopped_at + 5]
    assert late == []
    assert len(calls()) < len(devices)  # it was stopped, not finished
    assert stack.repo.get_bulk_change(bulk_id).status == "CANCELLED"
    counts = stack.repo.counts(bulk_id)
    assert set(counts) <= {"PROCESSED", "CANCELLED"}, counts  # no device left unknown
    reasons = {
        c.last_error for c in stack.repo.device_changes_of(bulk_id) if c.status == "CANCELLED"
    }
    assert all(r.startswith("stopped by an operator") for r in reasons)
    assert scenario.runs_of(bulk_id)[0]["tags"]["bulk_changes/outcome"] == "cancelled"


def test_the_jobs_partitions_page_offers_a_backfill_of_bulk_changes(scenario, page):
    open_ui(page, f"{scenario.url}/jobs")
    page.get_by_role("link", name="process_bulk_change").first.click()
    page.get_by_role("tab", name="Partitions").click()
    page.get_by_role("button", name="Launch backfill").wait_for()
    shot(page, "06-partitions")
    assert page.get_by_text("Total partitions").count() == 1


def test_the_launchpad_prefills_no_database_url(scenario, page):
    open_ui(page, f"{scenario.url}/jobs")
    page.get_by_role("link", name="process_bulk_change").first.click()
    page.get_by_role("tab", name="Launchpad").click()
    page.get_by_role("button", name="Launch Run").wait_for()
    page.wait_for_load_state("networkidle")
    shot(page, "07-launchpad")
    text = page.inner_text("body")
    assert "Launch Run" in text  # it is the Launchpad
    assert scenario.stack.env["BULK_CHANGES_DB_URL"] not in text


# -- the same mechanisms without the browser: the backfill CLI and `bulk-changes retry` --------


def test_a_backfill_of_selected_bulk_changes_runs_each_with_its_tags(scenario):
    stack = scenario.stack
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "job", "backfill",
            "-w", str(stack.root / "workspace.yaml"),
            "-j", "process_bulk_change",
            "--partitions", f"{scenario.clean},{scenario.failed}",
            "--noprompt",
        ],
        env=stack.env, cwd=stack.root, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 180
    for bulk_id in (scenario.clean, scenario.failed):
        run = scenario.runs_of(bulk_id)[0]
        # the backfill daemon of dagster dev launches them
        while "dagster/backfill" not in run["tags"] or run["status"] != "SUCCESS":
            assert time.monotonic() < deadline, run
            time.sleep(1)
            run = scenario.runs_of(bulk_id)[0]
        assert run["tags"]["bulk_changes/tenant"] == "acme"
        assert run["tags"]["dagster/partition"] == str(bulk_id)


def test_cli_retry_runs_the_failed_devices_with_the_bulk_changes_tags(scenario):
    stack = scenario.stack
    devices = [r["iccid"] for r in scenario.jasper[140:142]]
    stack.sims.jasper.configure(error_rate=1.0)
    try:
        bulk_id = stack.submit(
            "acme",
            "device_status",
            "jasper",
            [{"iccid": i, "status": "DEACTIVATED"} for i in devices],
        )
        stack.wait_final([bulk_id])
    finally:
        stack.sims.jasper.configure(error_rate=0.0)
    assert stack.repo.counts(bulk_id) == {"API_FAILED": 2}
    done = stack.cli("retry", str(bulk_id))
    assert done.returncode == 0, done.stderr
    run = scenario.wait_for_run(bulk_id, count=2, status="SUCCESS")
    assert stack.repo.counts(bulk_id) == {"PROCESSED": 2}
    assert run["tags"]["bulk_changes/tenant"] == "acme"
    assert run["tags"]["bulk_changes/retry_request_id"].startswith("cli-")


def test_cli_cancel_terminates_the_running_bulk_change(scenario):
    stack = scenario.stack
    devices = [r["iccid"] for r in scenario.jasper[150:250]]  # 20 s of work at 5 a second
    bulk_id = stack.submit(
        "acme", "device_status", "jasper", [{"iccid": i, "status": "DEACTIVATED"} for i in devices]
    )
    scenario.wait_for_run(bulk_id, count=1, status="STARTED")
    done = stack.cli("cancel", str(bulk_id))
    assert done.returncode == 0, done.stdout + done.stderr
    assert stack.repo.get_bulk_change(bulk_id).status == "CANCELLED"
    run = scenario.wait_for_run(bulk_id, count=1, status="CANCELED", timeout=60)
    assert run["tags"]["bulk_changes/outcome"] == "cancelled"
    assert set(stack.repo.counts(bulk_id)) <= {"PROCESSED", "CANCELLED"}
