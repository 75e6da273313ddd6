"""The code location: the definitions of each area (``bulk_changes.defs``) merged, with the
resources of the environment (``bulk_changes.environments``, BULK_CHANGES_ENV)."""

from __future__ import annotations

from dagster import Definitions, JobDefinition

from bulk_changes.defs import notifications, operations, processing
from bulk_changes.environments import dagster_resources
from bulk_changes.resources.step_outputs import StepOutputStore


def build_defs(env: str | None = None) -> Definitions:
    """``env``: ``local`` or ``production``; None for $BULK_CHANGES_ENV."""
    return Definitions.merge(
        processing.defs,
        notifications.defs,
        operations.defs,
        Definitions(resources={**dagster_resources(env), "io_manager": StepOutputStore()}),
    )


defs = build_defs()


def process_bulk_change_job() -> JobDefinition:
    """The job with this environment's resources, for ``reconstructable`` (re-execution
    from Python, e.g. after a run worker died)."""
    return defs.resolve_job_def("process_bulk_change")
