"""One process of `test_multiprocess.py`: the toy task trained on a data mesh over two processes.

Run as `python -m tests.efficient.train._multiprocess_worker WORKDIR OUT` from the repository
root, with one CPU device per process and `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
`JAX_PROCESS_ID` set. The process joins the cluster as `experiments.run --distributed` does
(`jax.distributed.initialize`, gloo collectives on CPU), trains `STEPS` steps in two sessions
(`stop_after=STOP_AFTER`, then `resume=True`: the checkpoint round trip is multi-process too),
and writes `OUT/process_<id>.json` (what it saw) and `OUT/params_<id>.npz` (the final params).
"""

import json
import pathlib
import sys

import numpy as np

NUM_PROCESSES = 2
GLOBAL_BATCH = 16
STEPS = 6
STOP_AFTER = 3


def train_config(**overrides):
    from efficient.train import OptimizerConfig, TrainConfig

    # SGD, not Adam: Adam divides by sqrt(v), which turns the last-bit differences of a reordered
    # cross-device reduction into O(lr) differences (as in test_loop's sharded test).
    sgd = OptimizerConfig(name="sgd", learning_rate=0.1, weight_decay=1e-3)
    return TrainConfig(
        steps=STEPS, log_every=1, checkpoint_every=STEPS, progress=False, optimizer=sgd,
        **overrides,
    )  # fmt: skip


def local_rows(batch, process_id: int):
    """This process's rows `[i * b, (i + 1) * b)` of a global batch (as `efficient.data` does)."""
    b = GLOBAL_BATCH // NUM_PROCESSES
    return {k: v[process_id * b : (process_id + 1) * b] for k, v in batch.items()}


def main(workdir: pathlib.Path, out: pathlib.Path) -> None:
    import jax

    from experiments.run import _initialize_distributed, _process_0s

    _initialize_distributed()
    process_id = jax.process_index()
    # experiments.run names a default run directory after the time: process 0's name is used.
    agreed = _process_0s(pathlib.Path(f"runs/started_by_{process_id}"))
    from jax.experimental import multihost_utils

    from efficient.train import train
    from tests.efficient.train._toy import toy_task, toy_train_data

    def data():
        return toy_train_data(batch_size=GLOBAL_BATCH).map(lambda b: local_rows(b, process_id))

    first = train(
        toy_task(), train_config(stop_after=STOP_AFTER), train_data=data(), workdir=workdir
    )
    second = train(toy_task(), train_config(), train_data=data(), workdir=workdir, resume=True)
    params = multihost_utils.process_allgather(second.state.params, tiled=True)
    flat = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree.leaves_with_path(params)}
    np.savez(out / f"params_{process_id}.npz", **flat)
    report = {
        "process_index": process_id,
        "run_dir": str(agreed),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "mesh": second.summary["mesh"],
        "status": [first.summary["status"], second.summary["status"]],
        "steps": [first.summary["step"], second.summary["step"]],
        "loss": [first.summary["final_train"]["loss"], second.summary["final_train"]["loss"]],
    }
    (out / f"process_{process_id}.json").write_text(json.dumps(report))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
