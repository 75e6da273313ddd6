"""bulk_changes.sqlite_engines: one SQLAlchemy engine per SQLite database and process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.pool import NullPool

from bulk_changes import dagster_private, sqlite_engines
from bulk_changes.sqlite_engines import EngineCache
from bulk_changes_tests.helpers import printed_by_a_fresh_interpreter

MODULES = (
    dagster_private.sqlite_run_storage_module,
    dagster_private.sqlite_schedule_storage_module,
    dagster_private.sqlite_event_log_module,
    dagster_private.consolidated_sqlite_event_log_module,
)


@pytest.fixture
def restored_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    # the patch is process-wide: undone after each test
    for module in MODULES:
        monkeypatch.setattr(module, "create_engine", module.create_engine)


class Made:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, url: str, **kwargs: object) -> object:
        self.calls += 1
        return object()


def test_the_same_database_and_arguments_get_the_same_engine() -> None:
    make = Made()
    cache = EngineCache(make)
    first = cache("sqlite:///a.db", poolclass=NullPool, connect_args={"timeout": 30})
    assert cache("sqlite:///a.db", poolclass=NullPool, connect_args={"timeout": 30}) is first
    assert make.calls == 1


def test_another_database_gets_its_own_engine() -> None:
    cache = EngineCache(Made())
    assert cache("sqlite:///a.db", poolclass=NullPool) is not cache(
        "sqlite:///b.db", poolclass=NullPool
    )


def test_the_least_recently_used_engine_is_dropped_beyond_the_limit() -> None:
    make = Made()
    cache = EngineCache(make, size=2)
    a = cache("sqlite:///a.db")
    cache("sqlite:///b.db")
    assert cache("sqlite:///a.db") is a  # a used again: b is now the oldest
    cache("sqlite:///c.db")
    assert list(key[0] for key in cache.engines) == ["sqlite:///a.db", "sqlite:///c.db"]
    assert make.calls == 3


@contextmanager
def _instance_with_two_runs(tmp_path: Path) -> Iterator[Any]:
    """An instance of the embedded instance file in ``tmp_path``, with two runs of a
    one-op job ``greet`` stored."""
    from dagster import DagsterInstance, job, op

    from bulk_changes.paths import default_instance_yaml

    @op
    def hello() -> int:
        return 1

    @job
    def greet() -> None:
        hello()

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(default_instance_yaml(), home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        for _ in range(2):
            assert greet.execute_in_process(instance=instance).success
        yield instance


def test_an_instance_on_patched_sqlite_storage_stores_and_reads_runs(
    tmp_path: Path, restored_modules: None
) -> None:
    from dagster import RunsFilter

    assert sqlite_engines.reuse_sqlite_engines()
    assert all(isinstance(m.create_engine, EngineCache) for m in MODULES)

    with _instance_with_two_runs(tmp_path) as instance:
        runs = instance.get_runs(RunsFilter(job_name="greet"))
        assert len(runs) == 2
        assert all(instance.all_logs(run.run_id) for run in runs)
    cached = {key[0] for m in MODULES for key in m.create_engine.engines}
    assert any(url.endswith("runs.db") for url in cached)


def test_the_setting_keeps_dagsters_engines(
    monkeypatch: pytest.MonkeyPatch, restored_modules: None
) -> None:
    monkeypatch.setenv(sqlite_engines.SETTING_ENV, "new")
    assert not sqlite_engines.reuse_sqlite_engines()
    assert not any(isinstance(m.create_engine, EngineCache) for m in MODULES)


def test_run_workers_forked_from_the_preloaded_server_keep_their_sqlite_engines() -> None:
    check = (
        "import bulk_changes.run_worker_preload\n"
        "from bulk_changes import dagster_private as p\n"
        "from bulk_changes.sqlite_engines import EngineCache\n"
        "print(isinstance(p.sqlite_event_log_module.create_engine, EngineCache))\n"
    )
    assert printed_by_a_fresh_interpreter(check) == "True"


class Kwargs(Made):
    def __call__(self, url: str, **kwargs: object) -> object:
        self.kwargs = kwargs
        return super().__call__(url, **kwargs)


def test_kept_connections_make_a_pool_any_thread_can_use() -> None:
    from sqlalchemy.pool import QueuePool

    make = Kwargs()
    cache = EngineCache(make)
    cache.keep_connections = True
    cache("sqlite:///a.db", poolclass=NullPool)

    assert make.kwargs["poolclass"] is QueuePool
    assert make.kwargs["connect_args"] == {"check_same_thread": False}


def test_a_kept_connection_sees_what_another_connection_committed(tmp_path: Path) -> None:
    import sqlite3

    from sqlalchemy import create_engine, text

    cache = EngineCache(create_engine)
    cache.keep_connections = True
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    with cache(url, poolclass=NullPool).begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    other = sqlite3.connect(tmp_path / "kept.db")
    other.execute("INSERT INTO t VALUES (1)")
    other.commit()
    other.close()

    with cache(url, poolclass=NullPool).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_an_instance_with_kept_connections_stores_runs_and_reads_them_from_threads(
    tmp_path: Path, restored_modules: None
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dagster import RunsFilter

    assert sqlite_engines.reuse_sqlite_engines() and sqlite_engines.keep_sqlite_connections()

    with _instance_with_two_runs(tmp_path) as instance:

        def count(_: int) -> int:
            return len(instance.get_runs(RunsFilter(job_name="greet")))

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(count, range(8))) == [2] * 8
