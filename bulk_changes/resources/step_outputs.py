"""Where the job's steps keep their outputs between steps: pickles on the run worker's disk.

The same files, in the same places, as Dagster's filesystem IO manager
(``<base_dir>/<run id>/<step key>/<output>[/<mapping key>]``, under the instance's storage
directory by default), so re-execution finds the outputs of the steps it skips the same
way. What it leaves out is that manager's debug event for every output written and
every input read: two event-log writes per batch, on the path of the first batch (every
batch's output is written before any batch step can start) and of every batch after it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableIOManagerFactory,
    InitResourceContext,
    InputContext,
    IOManager,
    OutputContext,
)


class PickledStepOutputs(IOManager):
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    def path_for(self, context: OutputContext) -> Path:
        # the run id is the parent run's for a step that a re-execution skips
        return self.base_dir.joinpath(*context.get_identifier())

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self.path_for(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(partial, path)  # a reader never sees half a file

    def load_input(self, context: InputContext) -> Any:
        if context.upstream_output is None:
            raise ValueError(f"input {context.name} has no upstream output to load")
        return pickle.loads(self.path_for(context.upstream_output).read_bytes())


class StepOutputStore(ConfigurableIOManagerFactory):
    """The job's IO manager. ``base_dir``: empty for the Dagster instance's storage
    directory (``$DAGSTER_HOME/storage``), where the default IO manager keeps them."""

    base_dir: str = ""

    def create_io_manager(self, context: InitResourceContext) -> PickledStepOutputs:
        if self.base_dir:
            return PickledStepOutputs(Path(self.base_dir))
        if context.instance is None:
            raise ValueError("StepOutputStore needs a Dagster instance or a base_dir")
        return PickledStepOutputs(Path(context.instance.storage_directory()))
