"""Grain data pipelines over installed datasets, with synthetic twins for smoke runs."""

from efficient.data.fashion_mnist import load_fashion_mnist
from efficient.data.images import ImageDataConfig, dataset_info, eval_dataset, train_dataset
from efficient.data.synthetic import synthetic_images
from efficient.data.text import (
    TextDataConfig,
    decode,
    encode,
    load_corpus,
    synthetic_text,
    text_dataset_info,
    text_eval_dataset,
    text_train_dataset,
)

__all__ = [
    "ImageDataConfig",
    "TextDataConfig",
    "dataset_info",
    "decode",
    "encode",
    "eval_dataset",
    "load_corpus",
    "load_fashion_mnist",
    "synthetic_images",
    "synthetic_text",
    "text_dataset_info",
    "text_eval_dataset",
    "text_train_dataset",
    "train_dataset",
]
