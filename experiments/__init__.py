"""Experiment presets registered by name; `python -m experiments.run --list`."""
