"""A toy task for trainer tests: a small MLP with BatchNorm and dropout on a Grain pipeline."""

import flax.linen as nn
import grain
import jax.numpy as jnp
import numpy as np

from efficient.train import Task, classification_loss

FEATURES = 16


class ToyNet(nn.Module):
    classes: int = 4
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Dense(
            32,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), ("embed", "mlp")
            ),
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(
            self.classes,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), ("mlp", "classes")
            ),
        )(x)


def toy_task(dropout: float = 0.1) -> Task:
    return Task(
        model=ToyNet(dropout=dropout),
        loss_fn=classification_loss(0.0),
        inputs=lambda b: (b["x"],),
    )


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    w = rng.normal(size=(FEATURES, 4)).astype(np.float32)
    y = np.argmax(x @ w, -1).astype(np.int32)
    return x, y


def toy_train_data(batch_size=16, seed=0, poison_at: int | None = None):
    """Infinite, shuffled per epoch, checkpointable. `poison_at`: batch index made of NaNs."""
    x, y = _data()
    ds = grain.MapDataset.range(len(x)).repeat(None).shuffle(seed=seed)
    ds = ds.map(lambda i: {"x": x[i], "label": y[i]}).batch(batch_size, drop_remainder=True)
    if poison_at is not None:
        ds = ds.map_with_index(
            lambda i, b: {**b, "x": np.full_like(b["x"], np.nan)} if i == poison_at else b
        )
    return ds.to_iter_dataset()


def toy_eval_data(batch_size=64):
    x, y = _data(seed=1)
    return [
        {"x": x[i : i + batch_size], "label": y[i : i + batch_size],
         "mask": np.ones(batch_size, np.float32)}
        for i in range(0, len(x), batch_size)
    ]  # fmt: skip


__all__ = ["jnp", "toy_eval_data", "toy_task", "toy_train_data"]
