"""The anomaly configs (issue 12), built in one place: ``config(method, dataset, scale)``.

``scale='small'`` is what ran on the 2-core CPU for experiments/results/one_class.md
(narrow networks, few epochs); ``scale='full'`` is the accelerator setting (the papers'
widths and epochs: Ruff et al. 2018 Sec. 4.1 trains Deep SVDD 150 epochs with Adam
1e-4, batch 200; Golan & El-Yaniv 2018 train their WRN-16-8 on the 72 transformations
for ~200 epochs of the normal class divided by the transformation count). Every config
holds out 10% of the training split (``train[90%:]``): its normal-class images calibrate
the threshold of ``python -m cnn_arch.anomaly.score``.
"""

from __future__ import annotations

from configs import base

METHODS = ("reconstruction", "continuation", "deep_svdd", "rotation", "geom", "knn")
DATASETS = ("mnist", "fashion_mnist", "cifar10")
SCALES = ("small", "full")


def _grey(dataset: str) -> bool:
    return dataset != "cifar10"


def config(method: str, dataset: str, scale: str = "small"):
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}: choose one of {', '.join(SCALES)}")
    full = scale == "full"
    c = base.get_config()
    c.dataset = dataset
    c.normal_class = 0  # --config.normal_class=c picks the class
    c.train_split = "train[:90%]"
    c.augment = "none"  # flips and crops would be artificial variations themselves
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "cosine"
    c.batch_size = 64
    c.eval_batch_size = 500
    c.log_every_steps = 50
    c.checkpoint_every_steps = 100_000  # one at the end
    c.steps_per_eval = 1_000_000_000  # the anomaly evaluator runs once, at the end
    methods = ("task",)
    if method in ("reconstruction", "continuation", "knn"):
        c.model = "conv_continuation" if method == "continuation" else "conv_autoencoder"
        width = 32 if full else 16
        c.model_kwargs = {"width": width, "latent": 32 if _grey(dataset) else 128}
        c.num_epochs = 100.0 if full else (2.0 if _grey(dataset) else 3.0)
        if method == "knn":
            methods = ("knn", "task")
    elif method == "deep_svdd":
        c.model = "deep_svdd"
        # Ruff et al. 2018 Sec. 4.1: (8, 4) -> 32 on MNIST, (32, 64, 128) -> 128 on CIFAR-10.
        widths, rep = ((8, 4), 32) if _grey(dataset) else ((32, 64, 128), 128)
        c.model_kwargs = {"widths": widths, "rep_dim": rep, "center_images": 4000}
        c.learning_rate = 1e-4
        c.batch_size = 200 if full else 64
        c.num_epochs = 150.0 if full else 3.0
    elif method in ("rotation", "geom"):
        c.model = "transform_classifier"
        kind = "rot4" if method == "rotation" else "geom72"
        widths = (64, 128, 256) if full else ((8, 16, 32) if _grey(dataset) else (16, 32, 64))
        c.model_kwargs = {"transformations": kind, "widths": widths}
        c.batch_size = 32 if kind == "rot4" else 8  # x4 or x72 transformed copies per image
        c.num_epochs = (200.0 / 72 * 4 if kind == "rot4" else 200.0 / 72) if full else 1.0
        if kind == "geom72" and not full:
            c.num_train_steps = 150  # ~1,200 images x 72 copies: what fits here
            c.eval_split = "test[:1000]"  # scoring is 72 forward passes per image
        c.eval_batch_size = 250
    else:
        raise ValueError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    c.evals = {
        "anomaly": {"kind": "anomaly", "methods": methods, "calibration_split": "train[90%:]"}
    }
    return c


def msp_config(dataset: str = "fashion_mnist", ood_dataset: str = "mnist", scale: str = "small"):
    """Hendrycks & Gimpel 2017's baseline: a classifier of every class of ``dataset``;
    its maximum softmax probability separates ``dataset``'s test images (normal) from
    ``ood_dataset``'s (anomalous)."""
    c = base.get_config()
    c.model = "lenet5"
    c.dataset = dataset
    c.train_split = "train[:90%]"
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "cosine"
    c.batch_size = 128
    c.eval_batch_size = 500
    c.num_epochs = 20.0 if scale == "full" else 2.0
    c.log_every_steps = 100
    c.checkpoint_every_steps = 100_000
    c.steps_per_eval = 1_000_000_000
    c.evals = {
        "anomaly": {
            "kind": "anomaly",
            "methods": ("msp",),
            "ood_dataset": ood_dataset,
            "calibration_split": "train[90%:]",
        }
    }
    return c
