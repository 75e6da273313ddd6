"""A small run of the benchmark, so it cannot rot. It measures; it asserts only behaviour."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_benchmark_smoke_run_produces_figures_plot_and_baseline(tmp_path, capsys):
    from bench.run_bench import main

    assert main(["--smoke", "--out", str(tmp_path)]) == 0
    (result,) = json.loads((tmp_path / "results.json").read_text())
    assert result["scenario"] == "jasper_ucc"
    assert [b["counts"] for b in result["bulk_changes"]] == [{"PROCESSED": 200}]
    assert result["throttled"] == 0
    assert result["violations"]["jasper"] == {"rate": 0, "in_flight": 0}
    assert result["calls_per_device"]["revio"] <= 1.05
    assert (tmp_path / "jasper_ucc.png").stat().st_size > 0
    assert set(result["simulator_host_full_collections"]) == {
        "full_collections",
        "longest_ms",
        "over_tolerance",
    }
    assert result["baseline"]["processed"] + result["baseline"]["failed"] == 200
    # the host's cost of work after a wait, printed beside the load
    assert result["host_caches"]["back_to_back_us"] > 0
    assert result["host_caches"]["after_wait_us"] > 0
    out = capsys.readouterr().out
    assert "makespan" in out
    assert "host caches: a piece of Python" in out
