"""Orbax checkpoints of the train state and the data iterator (async, atomic, keep last N)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves/restores {'state': TrainState, 'data': iterator state, 'run': run record} under
    `workdir/<name>`.

    Orbax writes each step into a temporary directory and renames it when complete, so a
    killed run never leaves a half-written checkpoint that `latest_step` would pick up.
    The data iterator state is captured (as JSON) at the moment `save` is called, so the
    asynchronous write cannot race with the iterator moving on. In a multi-process run every
    process saves its shards of the state, but Orbax writes the JSON of process 0 only, and every
    process restores that one: right for pipelines whose processes step through the same global
    batches and keep their own rows of each (as `efficient.data`'s do).

    The run record is a JSON dict that the train loop needs to continue exactly (the best
    evaluation and the evaluations since it, the last metrics, the time spent): kept with the
    state it belongs to, not rebuilt from the metrics log. Checkpoints written before it existed
    have none (`run_record` returns None).
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        keep: int,
        async_save: bool = True,
        name: str = "checkpoints",
    ):
        self.directory = pathlib.Path(workdir).absolute() / name
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "run")
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def delete(self, step: int) -> None:
        self._manager.delete(step)

    def save(self, step: int, state: Any, data_state: dict | None, run: dict | None = None) -> None:
        """Save `step` (asynchronously); the JSON items are copied now, so callers may go on."""
        items = {
            "state": ocp.args.StandardSave(state),
            "data": ocp.args.JsonSave(_json_copy(data_state if data_state is not None else {})),
        }
        if run is not None:
            items["run"] = ocp.args.JsonSave(_json_copy(run))
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restore `step` into arrays with the shardings of `abstract_state` (ShapeDtypeStructs):
        (state, data iterator state)."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.data

    def run_record(self, step: int) -> dict | None:
        """The run record saved with `step`; None for a checkpoint written before them."""
        # Orbax's default step layout, <directory>/<step>/<item>; asking the manager for the
        # items present (item_metadata) logs a warning per item.
        if not (self.directory / str(step) / "run").is_dir():
            return None
        return self._manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _json_copy(value: dict) -> dict:
    return json.loads(json.dumps(value))


def abstract_like(tree, shardings):
    """ShapeDtypeStructs with shardings: the restore target of a sharded state."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
