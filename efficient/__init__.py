"""efficient: JAX/Flax reimplementations of efficiency papers."""

__version__ = "0.1.0"
