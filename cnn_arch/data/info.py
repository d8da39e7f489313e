"""What a pipeline hands the model and the loop: ``DataInfo``, free of TensorFlow so that
synthetic runs (``cnn_arch.benchmark``) describe their data without loading it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataInfo:
    name: str
    task: str  # 'classification' or 'segmentation'
    num_classes: int
    image_shape: tuple[int, int, int]  # after preprocessing (what the model sees)
    num_train: int
    num_eval: int
    label_shape: tuple[int, ...] = ()  # per eval example: () or (H, W) for segmentation
    train_pp: str = ""  # the preprocessing specs in use (the defaults filled in)
    eval_pp: str = ""
    # Training batches carry float32 (B, num_classes) label distributions (mixup/cutmix)
    # instead of int labels; eval batches always carry int labels.
    soft_labels: bool = False
    jpeg: bool = False  # the image feature is JPEG bytes (crops can decode only the crop)
