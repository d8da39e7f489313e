"""Score new images with a trained detector, flagging anomalies at a chosen false-positive rate.

    python -m cnn_arch.anomaly.score --workdir=W --images=DIR --fpr=0.05
    python -m cnn_arch.anomaly.score --workdir=W --images='test[:100]'        # a TFDS split
    python -m cnn_arch.anomaly.score --workdir=W --images='mnist:test[:100]'  # of a dataset

``W`` is a workdir of ``python -m cnn_arch.anomaly``. ``--images`` is a folder of PNG /
JPEG files (searched recursively) or a TFDS split (of the workdir's dataset, or
``name:split``). The threshold is the score that a fraction ``--fpr`` of the held-out
normal images exceeds (their scores are the ``calibration_score`` of ``W/scores.npz``);
an image scoring above it is anomalous. Prints one line per image and writes them all to
``--out`` (default ``W/new_scores.json``). Images of another size or channel count than
the detector's training images: one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from cnn_arch.errors import UserError  # noqa: E402

SUFFIXES = (".png", ".jpg", ".jpeg")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every user error
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def read_folder(folder: str) -> tuple[list[str], list[np.ndarray]]:
    """(paths, uint8 (H, W, C) arrays) of the image files under ``folder``, sorted."""
    from PIL import Image

    paths = sorted(
        os.path.join(root, name)
        for root, _, files in os.walk(folder)
        for name in files
        if name.lower().endswith(SUFFIXES)
    )
    if not paths:
        raise UserError(f"--images={folder} holds no {'/'.join(SUFFIXES)} files")
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                array = np.asarray(im)
        except OSError as e:
            raise UserError(f"cannot read {path}: {e}") from None
        images.append(array[..., None] if array.ndim == 2 else array)
    return paths, images


def read_split(config, text: str) -> tuple[list[str], list[np.ndarray]]:
    """(names, uint8 arrays) of a TFDS split: ``split`` of the workdir's dataset or
    ``name:split``."""
    import tensorflow_datasets as tfds

    from cnn_arch import data

    # 'name:split' names a dataset; a bare split may hold colons itself ('test[:100]').
    named = re.fullmatch(r"([A-Za-z_][\w/.]*):(.+)", text)
    name, split = named.groups() if named else (config.dataset, text)
    try:
        ds = tfds.load(name, split=split, data_dir=data.data_dir_for(config), download=False)
    except Exception as e:  # noqa: BLE001 - any TFDS failure here is a bad --images
        reason = " ".join(str(e).split())[:200]
        raise UserError(
            f"--images={text!r} is neither a folder nor a TFDS split: {reason}"
        ) from None
    images = [ex["image"] for ex in tfds.as_numpy(ds)]
    return [f"{name}:{split}#{i}" for i in range(len(images))], images


def check_shapes(names, images, expected: tuple) -> None:
    for name, image in zip(names, images, strict=True):
        if image.shape != tuple(expected):
            h, w, c = expected
            raise UserError(
                f"{name} is {'x'.join(map(str, image.shape))} (HxWxC); the detector was trained "
                f"on {h}x{w}x{c} images"
            )


def score_images(workdir: str, images_arg: str, fpr: float) -> dict:
    """{'threshold', 'fpr', 'images': [{'name', 'score', 'anomalous'}]}."""
    import tensorflow_datasets as tfds

    from cnn_arch import data
    from cnn_arch import run as run_lib
    from cnn_arch import workdir as workdir_lib
    from cnn_arch.anomaly import roc, scoring
    from cnn_arch.anomaly.__main__ import SCORES

    if not 0 < fpr < 1:
        raise UserError(f"--fpr={fpr} must be in (0, 1)")
    scores_path = workdir_lib.path(workdir) / SCORES
    if not scores_path.exists():
        raise UserError(f"{scores_path} does not exist: train with `python -m cnn_arch.anomaly`")
    with scores_path.open("rb") as f:
        saved = dict(np.load(f))
    if "calibration_score" not in saved:
        raise UserError(
            f"{scores_path} has no calibration scores: set calibration_split in the anomaly "
            "evaluator (the configs in configs/anomaly/ do)"
        )
    run, state = run_lib.from_workdir(workdir)
    builder = tfds.builder(run.config.dataset, data_dir=data.data_dir_for(run.config))
    raw_shape = builder.info.features["image"].shape
    if os.path.isdir(images_arg):
        names, images = read_folder(images_arg)
    else:
        names, images = read_split(run.config, images_arg)
    check_shapes(names, images, raw_shape)
    spec = next(s for s in run.config.evals.values() if s.get("kind") == "anomaly")
    method = tuple(spec.get("methods", ("task",)))[0]
    scorer = scoring.Scorer(run, (method,), spec.get("knn_k", 5))
    if method == "knn":
        bank = scoring.training_images(run, spec.get("knn_bank", 2000))
        scorer.fit_bank(state.variables, bank)
    x = data.preprocess_images(run.info, np.stack(images).astype(np.uint8))
    batch = run.config.eval_batch_size
    score = np.concatenate(
        [scorer.scores(state.variables, x[i : i + batch])[method] for i in range(0, len(x), batch)]
    )
    threshold = roc.threshold_at_fpr(saved["calibration_score"], fpr)
    rows = [
        {"name": n, "score": float(s), "anomalous": bool(s > threshold)}
        for n, s in zip(names, score, strict=True)
    ]
    return {"threshold": threshold, "fpr": fpr, "method": method, "images": rows}


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--images", required=True, help="a folder of PNG/JPEG or a TFDS split")
    parser.add_argument("--fpr", type=float, default=0.05, help="false-positive rate on normals")
    parser.add_argument("--out", default="", help="default: WORKDIR/new_scores.json")
    args = parser.parse_args(argv)
    try:
        result = score_images(args.workdir, args.images, args.fpr)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    for row in result["images"]:
        print(f"{row['name']}\t{row['score']:.6g}\t{'ANOMALY' if row['anomalous'] else 'normal'}")
    flagged = sum(r["anomalous"] for r in result["images"])
    print(
        f"{flagged} of {len(result['images'])} anomalous (threshold {result['threshold']:.6g} "
        f"at fpr {result['fpr']})"
    )
    out = args.out or os.path.join(args.workdir, "new_scores.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
