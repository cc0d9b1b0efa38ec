"""Two real processes on loopback (CPU, gloo collectives) train as one mesh: the code path of a TPU
pod or a GPU cluster after `jax.distributed.initialize()` (`experiments.run --distributed`)."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from efficient.train import read_metrics, train
from tests.efficient.train import _multiprocess_worker as worker
from tests.efficient.train._toy import toy_task, toy_train_data

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl")
            if r["split"] == "train"}  # fmt: skip


def test_two_processes_train_as_one_mesh(tmp_path):
    env = dict(os.environ)
    # One CPU device per process (replacing the test session's 8), so the mesh's two devices
    # live in two processes and every step all-reduces over gloo.
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env.pop("JAX_NUM_CPU_DEVICES", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
        JAX_NUM_PROCESSES=str(worker.NUM_PROCESSES),
    )
    shared = tmp_path / "shared"  # the run directory: one for all processes, as on a cluster
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", worker.__name__, str(shared), str(tmp_path)],
            cwd=ROOT,
            env={**env, "JAX_PROCESS_ID": str(i)},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(worker.NUM_PROCESSES)
    ]
    outputs, deadline = [], time.monotonic() + 240  # a stuck collective never hangs the suite
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=max(deadline - time.monotonic(), 1))[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, text) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{text[-4000:]}"

    n = worker.NUM_PROCESSES
    reports = [json.loads((tmp_path / f"process_{i}.json").read_text()) for i in range(n)]
    for i, r in enumerate(reports):
        assert (r["process_index"], r["process_count"]) == (i, n)
        assert (r["device_count"], r["local_device_count"]) == (n, 1)
        assert r["mesh"] == {"replica": 1, "data": 2, "fsdp": 1, "tensor": 1}
        assert r["run_dir"] == "runs/started_by_0"
        assert r["status"] == ["paused", "completed"]
        assert r["steps"] == [worker.STOP_AFTER, worker.STEPS]
    # Both processes saw the same global losses and hold the same parameters.
    assert reports[0]["loss"] == reports[1]["loss"]
    params = [np.load(tmp_path / f"params_{i}.npz") for i in range(n)]
    assert sorted(params[0]) == sorted(params[1])
    for name in params[0]:
        np.testing.assert_array_equal(params[0][name], params[1][name])
    # Process 0 alone wrote the run's files (one record per step, none repeated).
    multi = _losses(shared)
    assert sorted(multi) == list(range(1, worker.STEPS + 1))
    assert len(read_metrics(shared / "metrics.jsonl")) == worker.STEPS

    # The same global batches on one process with two simulated devices.
    one = train(
        toy_task(), worker.train_config(), workdir=tmp_path / "one", devices=jax.devices()[:2],
        train_data=toy_train_data(batch_size=worker.GLOBAL_BATCH),
    )  # fmt: skip
    assert one.summary["mesh"] == reports[0]["mesh"]
    single = _losses(tmp_path / "one")
    np.testing.assert_allclose([multi[s] for s in single], list(single.values()), rtol=1e-5)
    at_stops = [single[worker.STOP_AFTER], single[worker.STEPS]]
    np.testing.assert_allclose(reports[0]["loss"], at_stops, rtol=1e-5)
    want = {
        jax.tree_util.keystr(p): np.asarray(x)
        for p, x in jax.tree.leaves_with_path(one.state.params)
    }
    assert sorted(want) == sorted(params[0])
    for name, x in want.items():
        np.testing.assert_allclose(params[0][name], x, rtol=1e-5, atol=1e-6)
