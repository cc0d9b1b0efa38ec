"""Grain data pipelines over installed datasets, with synthetic twins for smoke runs."""

from efficient.data.fashion_mnist import load_fashion_mnist
from efficient.data.images import ImageDataConfig, dataset_info, eval_dataset, train_dataset
from efficient.data.synthetic import synthetic_images

__all__ = [
    "ImageDataConfig",
    "dataset_info",
    "eval_dataset",
    "load_fashion_mnist",
    "synthetic_images",
    "train_dataset",
]
