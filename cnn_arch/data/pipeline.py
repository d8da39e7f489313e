"""TFDS input pipelines: deterministic, resumable training batches and exact eval.

Classification datasets give ``{'image', 'label'}`` batches; segmentation datasets
(a ``segmentation_mask`` feature) give the per-pixel class map as ``label`` (N, H, W).

Training order is a pure function of (seed, epoch, process): each epoch shuffles with
its own seed and every random augmentation is seeded by the example's position, so
``train_batches(start_step=s)`` yields exactly what an uninterrupted run yields from
step s on. Evaluation covers the whole split: the last batch is padded and a
``mask`` marks real examples.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_arch.data import offline, preprocess
from cnn_arch.errors import UserError

# tf.data runs on the host only; keep TensorFlow off the accelerators JAX uses.
tf.config.set_visible_devices([], "GPU")


TASK_TARGETS = {"classification": "label", "segmentation": "segmentation_mask"}


@dataclasses.dataclass(frozen=True)
class DataInfo:
    name: str
    task: str  # 'classification' or 'segmentation'
    num_classes: int
    image_shape: tuple[int, int, int]  # after preprocessing (what the model sees)
    num_train: int
    num_eval: int
    recipe: preprocess.Recipe
    label_shape: tuple[int, ...] = ()  # per example: () or (H, W) for segmentation


def data_dir_for(config) -> str:
    """config.data_dir, else $TFDS_DATA_DIR, else TFDS' default folder."""
    return (
        config.data_dir
        or os.environ.get("TFDS_DATA_DIR")
        or os.path.expanduser("~/tensorflow_datasets")
    )


def _builder(config) -> tfds.core.DatasetBuilder:
    name, data_dir = config.dataset, data_dir_for(config)
    if name in offline.DATASETS:
        try:
            offline.prepare(data_dir, name)
        except OSError as e:
            raise UserError(
                f"cannot write the offline dataset {name!r} into {data_dir} ({e}); "
                "set config.data_dir to a writable folder"
            ) from None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"dataset={name!r} is neither a TFDS dataset nor prepared in {data_dir}; "
            f"use a name from `tfds.list_builders()` or an offline set {offline.DATASETS}"
        ) from None
    if not builder.is_prepared():
        if config.get("download", False):
            builder.download_and_prepare()
        else:
            hint = (
                " (ImageNet needs the ILSVRC2012 tars in <data_dir>/downloads/manual)"
                if name.startswith("imagenet")
                else ""
            )
            raise UserError(
                f"dataset {name!r} is not prepared in {data_dir}: run "
                f"`tfds build {name} --data_dir={data_dir}`{hint}, point TFDS_DATA_DIR or "
                "config.data_dir at a folder that has it, or set config.download=True"
            )
    for split in (config.train_split, config.eval_split):
        if split.split("[")[0] not in builder.info.splits:
            raise UserError(
                f"dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}"
            )
    return builder


def dataset_info(config, task: str = "classification") -> DataInfo:
    """What the model and loop need to know about ``config.dataset`` for ``task``."""
    builder = _builder(config)
    features = builder.info.features
    target = TASK_TARGETS[task]
    if "image" not in features or target not in features:
        raise UserError(
            f"dataset {config.dataset!r} has no 'image' and {target!r} features, so it cannot "
            f"be used for {task} (it has {sorted(features)})"
        )
    num_classes = config.get("num_classes", -1)
    if num_classes <= 0:
        if task == "segmentation" or not hasattr(features[target], "num_classes"):
            raise UserError(
                f"config.num_classes must be set for {task} on {config.dataset!r}: its "
                f"{target!r} feature does not say how many classes there are"
            )
        num_classes = features[target].num_classes
    if task == "segmentation" and None in features["image"].shape[:2]:
        raise UserError(
            f"dataset {config.dataset!r} has images of varying size; segmentation here needs "
            "a fixed size"
        )
    jpeg = getattr(features["image"], "encoding_format", None) == "jpeg"
    recipe = preprocess.recipe_for(
        config.dataset, features["image"].shape, config.augment, config.image_size, jpeg
    )
    if task == "segmentation":  # augmentations here move pixels; masks would need the same
        recipe = dataclasses.replace(recipe, train_augment="none", image_size=None)
    if recipe.image_size is not None:
        shape = (recipe.image_size, recipe.image_size, 3)
    else:
        shape = tuple(features["image"].shape)
    label_shape = shape[:2] if task == "segmentation" else ()
    return DataInfo(
        name=config.dataset,
        task=task,
        num_classes=num_classes,
        image_shape=shape,
        num_train=builder.info.splits[config.train_split].num_examples,
        num_eval=builder.info.splits[config.eval_split].num_examples,
        recipe=recipe,
        label_shape=label_shape,
    )


def _read(config, split: str, info: DataInfo, shuffle_seed: int | None) -> tf.data.Dataset:
    builder = _builder(config)
    decoders = {"image": tfds.decode.SkipDecoding()} if info.recipe.fused_jpeg else None
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
    return builder.as_dataset(
        split=split,
        shuffle_files=shuffle_seed is not None,
        decoders=decoders,
        read_config=read_config,
    ).map(lambda example: (example["image"], _target(example, info.task)))


def _target(example, task: str):
    target = example[TASK_TARGETS[task]]
    if task == "segmentation":  # (H, W, 1) image-encoded class map -> (H, W)
        target = tf.reshape(target, tf.shape(target)[:2])
    return tf.cast(target, tf.int32)


def _epoch_seed(seed: int, epoch: int, process_index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, process_index]).generate_state(1)[0])


def train_batches(
    config,
    info: DataInfo,
    *,
    local_batch_size: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's part of every global training batch from ``start_step`` on.

    An epoch is ``num_train // global_batch`` steps (the last partial batch is dropped).
    """
    split = tfds.even_splits(config.train_split, n=process_count, drop_remainder=True)[
        process_index
    ]
    steps_per_epoch = info.num_train // (local_batch_size * process_count)
    if steps_per_epoch == 0:
        raise UserError(
            f"batch_size={local_batch_size * process_count} is larger than the "
            f"{info.num_train} training examples of {config.dataset!r}"
        )
    base = _read(config, split, info, shuffle_seed=config.seed)
    if config.cache:
        base = base.cache()
    augment = preprocess.train_map(info.recipe)
    buffer = min(config.shuffle_buffer, info.num_train)
    epoch, offset = divmod(start_step, steps_per_epoch)
    while True:
        epoch_seed = _epoch_seed(config.seed, epoch, process_index)
        key = tf.constant([config.seed, epoch_seed % (2**31)], tf.int64)

        def prepare(index, example, key=key):
            image, label = example
            seed = tf.random.experimental.stateless_fold_in(key, index)
            return {"image": augment(image, seed), "label": label}

        ds = (
            base.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
            .enumerate()
            .skip(offset * local_batch_size)
            .map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(local_batch_size, drop_remainder=True)
            .take(steps_per_epoch - offset)
            .prefetch(tf.data.AUTOTUNE)
        )
        yield from ds.as_numpy_iterator()
        epoch, offset = epoch + 1, 0


def num_eval_batches(info: DataInfo, local_batch_size: int, process_count: int = 1) -> int:
    """Batches per process that cover the largest process shard of the eval split."""
    return math.ceil(math.ceil(info.num_eval / process_count) / local_batch_size)


def eval_batches(
    config,
    info: DataInfo,
    *,
    local_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields the whole eval split once, in fixed-size batches with a 0/1 ``mask``.

    Every process yields the same number of batches (padding with empty ones), so
    the global batches line up across hosts.
    """
    split = tfds.even_splits(config.eval_split, n=process_count)[process_index]
    normalize = preprocess.eval_map(info.recipe)
    ds = (
        _read(config, split, info, shuffle_seed=None)
        .map(
            lambda image, label: {"image": normalize(image), "label": label},
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(local_batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    n = 0
    for batch in ds.as_numpy_iterator():
        n += 1
        yield _pad(batch, local_batch_size)
    empty = {
        "image": np.zeros((0, *info.image_shape), np.float32),
        "label": np.zeros((0, *info.label_shape), np.int32),
    }
    for _ in range(num_eval_batches(info, local_batch_size, process_count) - n):
        yield _pad(empty, local_batch_size)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    real = batch["label"].shape[0]
    out = {
        k: np.concatenate([v, np.zeros((size - real, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    out["mask"] = (np.arange(size) < real).astype(np.float32)
    return out
