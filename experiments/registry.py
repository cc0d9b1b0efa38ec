"""Experiment presets registered by name (`<paper>/<preset>`): a typed config + a run function."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

# Modules whose import registers presets; a new paper adds its module here.
PAPER_MODULES = (
    "experiments.hyena",
    "experiments.kat",
    "experiments.lact",
    "experiments.lowformer",
    "experiments.noloco",
    "experiments.sasrec",
    "experiments.slowfast",
    "experiments.tim4rec",
    "experiments.transformer",
    "experiments.vit",
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named experiment: a frozen config dataclass and the function that runs it.

    `run(config, workdir, resume)` trains/evaluates and returns a summary dict; `check(config)`
    raises `ValueError` for an inconsistent config before anything runs.
    """

    name: str
    description: str
    config: Any
    run: Callable[..., dict]
    check: Callable[[Any], None] | None = None


_PRESETS: dict[str, Preset] = {}


def register(
    name: str,
    description: str,
    config: Any,
    run: Callable[..., dict],
    check: Callable[[Any], None] | None = None,
) -> None:
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is registered twice.")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"preset {name!r}: config must be a dataclass instance, got {config!r}.")
    _PRESETS[name] = Preset(name, description, config, run, check)


class ModelRegistry:
    """Model config type -> Linen module class, for one family of tasks (image, language, ...).

    Each paper's experiment module registers its config type once; the task's `run` builds the
    module from whatever config a preset (or a CLI override) holds.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._modules: dict[type, Callable[[Any], Any]] = {}

    def register(self, config_type: type, module: Callable[[Any], Any]) -> None:
        """Map a model config type to its Linen module class."""
        self._modules[config_type] = module

    def build(self, model_config):
        """The Linen module for a registered model config."""
        try:
            return self._modules[type(model_config)](model_config)
        except KeyError:
            raise TypeError(
                f"no {self.kind} model registered for {type(model_config).__name__}; "
                f"known: {', '.join(t.__name__ for t in self._modules)}."
            ) from None


def presets() -> dict[str, Preset]:
    """All registered presets, by name (imports every paper module once)."""
    for module in PAPER_MODULES:
        importlib.import_module(module)
    return dict(sorted(_PRESETS.items()))
