"""Converted weights on disk: an Orbax checkpoint of the variables plus their provenance.

Layout of a converted directory::

    DIR/variables/        StandardCheckpointer of {'params': ..., 'batch_stats': ...}
    DIR/provenance.json   where the weights came from and how to use them

``load_converted(DIR)`` is what ``--config.init_from=DIR`` restores; ``provenance(DIR)``
says which model and options (``model_kwargs``) the variables fit.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from importlib import metadata
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from cnn_arch.errors import UserError

VARIABLES = "variables"
PROVENANCE = "provenance.json"

# What torchvision's published ImageNet weights were evaluated with (its docs, per
# weight: resize the shorter side to 256, centre crop 224, this mean/std on [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def preprocessing(model: str, resize: int = 256) -> dict[str, Any]:
    """The input torchvision's published weights for ``model`` expect: the shorter side
    resized to ``resize`` (bilinear, antialiased), a centre 224 crop, mean/std on [0, 1]."""
    mean, std, note = IMAGENET_MEAN, IMAGENET_STD, "torchvision's ImageClassification transform"
    if model == "googlenet":
        # Its weights were ported from TensorFlow and torchvision builds the pretrained
        # model with transform_input=True, which turns ImageNet-normalized input into
        # (x - 0.5) / 0.5; our GoogLeNet has no such step, so feed that directly.
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        note += "; GoogLeNet: torchvision's transform_input maps inputs to (x - 0.5) / 0.5"
    return {"resize": resize, "crop": 224, "mean": mean, "std": std, "note": note}


def torchvision_version() -> str | None:
    """The torchvision installed here, if any (the file itself does not record one)."""
    try:
        return metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None


def save_converted(
    directory: str, variables: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """Writes the variables and ``provenance`` (plus parameter counts and the date)."""
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and os.listdir(directory):
        raise UserError(f"--out={directory} exists and is not empty; choose a new directory")
    counts = {c: int(sum(np.size(x) for x in jax.tree.leaves(v))) for c, v in variables.items()}
    record = dict(provenance)
    record |= {"counts": counts, "converted_at": datetime.datetime.now(datetime.UTC).isoformat()}
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(directory, VARIABLES), variables)
    checkpointer.wait_until_finished()
    with open(os.path.join(directory, PROVENANCE), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return record


def provenance(directory: str) -> dict[str, Any]:
    """The provenance record of a converted directory (model, model_kwargs, source ...)."""
    path = os.path.join(os.path.abspath(directory), PROVENANCE)
    if not os.path.isfile(path):
        raise UserError(f"{directory} has no {PROVENANCE}: not a converted-weights directory")
    with open(path) as f:
        return json.load(f)


def load_converted(directory: str) -> dict[str, Any]:
    """``{'params': ..., 'batch_stats': ...}`` (numpy arrays) of a converted directory."""
    path = os.path.join(os.path.abspath(directory), VARIABLES)
    if not os.path.isdir(path):
        raise UserError(f"{directory} has no {VARIABLES}/ checkpoint: not a converted directory")
    restored = ocp.StandardCheckpointer().restore(path)
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
