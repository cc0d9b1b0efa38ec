"""Pallas kernels (each op: reference.py, kernel.py, vjp.py, api.py, bench.py)."""
