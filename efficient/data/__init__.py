"""Grain data pipelines over installed datasets, with synthetic twins for smoke runs."""

from efficient.data.fashion_mnist import load_fashion_mnist
from efficient.data.images import ImageDataConfig, dataset_info, eval_dataset, train_dataset
from efficient.data.movielens import load_ml100k
from efficient.data.ranking import check_ks, ranking_metrics, target_ranks
from efficient.data.recsys import (
    RecSysDataConfig,
    Sequences,
    build_sequences,
    gather_examples,
    kcore_filter,
    leave_one_out,
    load_sequences,
    recsys_dataset_info,
    recsys_eval_dataset,
    recsys_train_dataset,
    synthetic_interactions,
)
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
from efficient.data.video_qa import (
    ClipPlan,
    VideoQADataConfig,
    make_clip,
    render_clips,
    sample_frames,
    video_qa_dataset_info,
    video_qa_eval_dataset,
    video_qa_train_dataset,
)
from efficient.nn.next_item import check_sequences  # the batch contract the models share

__all__ = [
    "ClipPlan",
    "ImageDataConfig",
    "RecSysDataConfig",
    "Sequences",
    "TextDataConfig",
    "VideoQADataConfig",
    "build_sequences",
    "check_ks",
    "check_sequences",
    "dataset_info",
    "decode",
    "encode",
    "eval_dataset",
    "gather_examples",
    "kcore_filter",
    "leave_one_out",
    "load_corpus",
    "load_fashion_mnist",
    "load_ml100k",
    "load_sequences",
    "make_clip",
    "ranking_metrics",
    "recsys_dataset_info",
    "recsys_eval_dataset",
    "recsys_train_dataset",
    "render_clips",
    "sample_frames",
    "synthetic_images",
    "synthetic_interactions",
    "synthetic_text",
    "target_ranks",
    "text_dataset_info",
    "text_eval_dataset",
    "text_train_dataset",
    "train_dataset",
    "video_qa_dataset_info",
    "video_qa_eval_dataset",
    "video_qa_train_dataset",
]
