"""NoLoCo vs DiLoCo vs data parallelism: the KJV transformer on 8 replicas at equal tokens.

NoLoCo (Kolehmainen et al., arXiv:2506.10911) against DiLoCo (Douillard et al.,
arXiv:2311.08105) and the all-reduce baseline. All three train `transformer/kjv`'s model and
recipe (byte-level KJV, T = 256, global batch 32, AdamW 2e-3 cosine; 500 steps, a CPU budget)
on a mesh of 8 replicas, 4 sequences each per step:

- `dataparallel/kjv`: one model, gradients averaged over the 8 replicas every step;
- `diloco/kjv`: 8 models, AdamW inside, every H = 25 steps an all-replica outer step
  (Nesterov, lr 0.7, momentum 0.9);
- `noloco/kjv`: 8 models, every H = 25 steps each averages with one random peer (heavy ball,
  lr 0.7, momentum 0.5).

Evaluations use the replica mean of the parameters. Each run's summary records what a device
sends, read from its compiled step (`communication`); `python -m experiments.noloco_report`
draws validation loss against step and against bytes sent, and the sync-time model.

8 replicas need 8 devices: on CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=8`.
"""

from __future__ import annotations

import dataclasses

import jax

from efficient.checks import check_choice
from efficient.sharding import MeshConfig
from efficient.train import OuterConfig
from experiments.language_modeling import LanguageModeling, run
from experiments.language_modeling import check_compatible as check_language
from experiments.registry import register
from experiments.transformer import kjv

METHODS = ("dataparallel", "diloco", "noloco")

REPLICAS = 8
SYNC_PERIOD = 25
STEPS = 500  # 500 x 32 x 256 = 4.1M tokens (transformer/kjv: 700 steps), 20 syncs
OUTER = {
    "dataparallel": None,
    "diloco": OuterConfig(
        name="diloco", sync_period=SYNC_PERIOD, learning_rate=0.7, momentum=0.9, nesterov=True
    ),
    "noloco": OuterConfig(
        name="noloco", sync_period=SYNC_PERIOD, learning_rate=0.7, momentum=0.5, group_size=2
    ),
}


def kjv_replicas(method: str, steps: int = STEPS) -> LanguageModeling:
    """`transformer/kjv` on a mesh of `REPLICAS` replicas trained with `method`.

    Raises:
        ValueError: `method` is not one of `METHODS`.
    """
    check_choice("kjv_replicas", "method", method, METHODS)
    base = kjv(steps)
    train = dataclasses.replace(
        base.train,
        mesh=MeshConfig(replica=REPLICAS, data=1, fsdp=1, tensor=1),
        outer=OUTER[method],
        eval_every=50,
        checkpoint_every=100,
    )
    return dataclasses.replace(base, train=train)


def check_compatible(config: LanguageModeling) -> None:
    """The language-model checks, and enough devices for the mesh."""
    check_language(config)
    mesh = config.train.mesh
    needed = mesh.replica * max(mesh.data, 1) * mesh.fsdp * mesh.tensor
    if jax.device_count() < needed:
        raise ValueError(
            f"train.mesh={mesh} needs {needed} devices, {jax.device_count()} are visible; on CPU "
            f"run with XLA_FLAGS=--xla_force_host_platform_device_count={needed}."
        )


for _method, _text in (
    ("dataparallel", "gradients all-reduced every step"),
    ("diloco", f"DiLoCo, all-replica outer step every {SYNC_PERIOD} steps"),
    ("noloco", f"NoLoCo, random-pair outer step every {SYNC_PERIOD} steps"),
):
    register(
        f"{_method}/kjv",
        f"transformer/kjv on {REPLICAS} replicas (4 sequences each), {_text}; {STEPS} steps.",
        kjv_replicas(_method),
        run,
        check_compatible,
    )
