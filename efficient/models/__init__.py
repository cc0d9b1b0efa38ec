"""One sub-package per architecture: config.py, model.py, README.md."""
