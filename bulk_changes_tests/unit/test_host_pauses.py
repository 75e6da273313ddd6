"""The benchmark counts the full collections of the simulators' host while calls come in."""

from __future__ import annotations

import gc

from bench.measure import HostPauses


def test_full_collections_are_counted_only_while_watching() -> None:
    pauses = HostPauses(tolerance_ms=0.0)
    gc.collect()
    pauses.start()
    gc.collect()
    gc.collect(1)  # not a full collection
    pauses.stop()
    gc.collect()
    figures = pauses.figures()
    assert figures["full_collections"] == 1
    assert figures["over_tolerance"] == 1


def test_no_collection_reads_as_none() -> None:
    pauses = HostPauses()
    pauses.start()
    pauses.stop()
    assert pauses.figures() == {"full_collections": 0, "longest_ms": 0.0, "over_tolerance": 0}
