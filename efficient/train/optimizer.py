"""Build an Optax optimizer and its schedule from an `OptimizerConfig`."""

from __future__ import annotations

import jax
import optax

from efficient.train.config import OptimizerConfig


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then the configured decay until `total_steps`."""
    peak, warmup = config.learning_rate, config.warmup_steps
    decay_steps = max(total_steps - warmup, 1)
    end = peak * config.end_lr_factor
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_lr_factor)
    elif config.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(
            f"OptimizerConfig.schedule={config.schedule!r}: use 'cosine', 'linear' or 'constant'."
        )
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(exclude: tuple[str, ...] = ()):
    """Which parameters weight decay applies to: kernels and embeddings (ndim > 1), not biases
    or norm scales (ndim <= 1), and none whose path has a key in `exclude`.

    The mask raises a ValueError when a name in `exclude` is no key of any parameter's path (a
    misspelt name would otherwise leave that parameter decaying, silently).
    """
    excluded = frozenset(exclude)

    def mask(params):
        seen: set[str] = set()

        def decays(path, p) -> bool:
            keys = {str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path}
            seen.update(keys)
            return p.ndim > 1 and not keys & excluded

        decaying = jax.tree_util.tree_map_with_path(decays, params)
        if missing := sorted(excluded - seen):
            known = sorted(seen)
            shown = ", ".join(known[:40]) + (f", ... ({len(known)} in all)" if known[40:] else "")
            raise ValueError(
                f"OptimizerConfig.weight_decay_exclude: {', '.join(map(repr, missing))} is no key "
                f"of any parameter's path (keys: {shown})"
            )
        return decaying

    return mask


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimizer named by `config`, with gradient clipping and the schedule applied."""
    lr = learning_rate_schedule(config, total_steps)
    mask = decay_mask(config.weight_decay_exclude)
    if config.name == "adamw":
        tx = optax.adamw(
            lr, b1=config.b1, b2=config.b2, eps=config.eps,
            weight_decay=config.weight_decay, mask=mask,
        )  # fmt: skip
    elif config.name == "lion":
        tx = optax.lion(lr, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay, mask=mask)
    elif config.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(config.weight_decay, mask=mask),
            optax.sgd(lr, momentum=config.momentum, nesterov=True),
        )
    else:
        raise ValueError(f"OptimizerConfig.name={config.name!r}: use 'adamw', 'sgd' or 'lion'.")
    if config.grad_clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx
