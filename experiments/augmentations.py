"""Every op of the pp spec language on real images: a picture and what each op costs.

    python experiments/augmentations.py --dataset=cifar10

Writes ``augmentations.png`` (first row: real test images as stored; then one row per op,
applied to those same images with the spec written at the row's left), ``augmentations.json``
(per op: the spec, mean absolute pixel change, how many images changed, tf.data
throughput) and ``augmentations.md`` (the table and the exact command). Ops whose default
strength is hard to see on 32x32 images are shown stronger; the row label is the exact spec.
Throughput: ``--timing_images`` test images through ``map(op, AUTOTUNE)`` + batch 256 on
this machine's cores, after one warm-up pass (the op alone, without normalize; mixup and
cutmix on batches of 256).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import _runs  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from PIL import Image  # noqa: E402

from cnn_arch.data import ops, pp, preprocess  # noqa: E402
from cnn_arch.errors import UserError  # noqa: E402

MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared"
# The spec shown for each op: its defaults where they are visible on small images.
ROWS = {
    "flip_lr": "flip_lr",
    "flip_ud": "flip_ud",
    "pad_crop": "pad_crop(4)",
    "random_crop": "random_crop(24)",
    "random_resized_crop": "random_resized_crop(32)",
    "center_crop": "center_crop(32, crop_padding=8)",
    "resize": "resize(16)",
    "rotate": "rotate(30)",
    "translate": "translate(0.2)",
    "zoom": "zoom",
    "shear": "shear(20)",
    "affine": "affine",
    "perspective": "perspective(0.5, prob=1.0)",
    "brightness": "brightness",
    "contrast": "contrast",
    "saturation": "saturation(0.8)",
    "hue": "hue(0.3)",
    "color_jitter": "color_jitter(0.4, 0.4, 0.4, 0.1)",
    "grayscale": "grayscale(prob=1.0)",
    "gaussian_noise": "gaussian_noise",
    "gaussian_blur": "gaussian_blur(5, (1.0, 2.0))",
    "pca_lighting": "pca_lighting(1.0)",
    "cutout": "cutout(12)",
    "random_erasing": "random_erasing(prob=1.0)",
    "randaugment": "randaugment(2, 9)",
    "mixup": "mixup(1.0)",
    "cutmix": "cutmix(1.0)",
}
MISSING = sorted(set(ops.OPS) - set(ROWS) - {"normalize"})
assert not MISSING, f"ops without a row: {MISSING}"  # every op gets a row


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _images(dataset: str, data_dir: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(f"dataset {dataset!r} is not a TFDS dataset") from None
    if not builder.is_prepared():
        raise UserError(f"dataset {dataset!r} is not prepared in {data_dir}; set --data_dir")
    batch = next(iter(builder.as_dataset(split=f"test[:{n}]", batch_size=n)))
    return batch["image"].numpy(), batch["label"].numpy()


def _apply(spec_text: str, ctx: ops.Context, images: np.ndarray, labels, seed: int):
    """The images after the spec's op, on the 0-255 scale (before normalize)."""
    if ops.OPS[spec_text.split("(")[0]].kind == "batch":
        spec = pp.parse(f"normalize(mean=(0,), std=(1,))|{spec_text}", "spec", ctx)
        out = pp.batch_fn(spec, normalize=True)(
            {"image": tf.constant(images), "label": tf.constant(labels, tf.int32)},
            tf.constant([seed, 0], tf.int64),
        )
        return out["image"].numpy()
    fn = pp.example_fn(pp.parse(f"{spec_text}|normalize", "spec", ctx))
    return [
        fn({"image": tf.constant(image)}, tf.constant([seed, i], tf.int64))["image"].numpy()
        for i, image in enumerate(images)
    ]


def _throughput(spec_text: str, ctx: ops.Context, images: np.ndarray, seed: int) -> dict:
    """Images/s of the op's per-example part through tf.data (batch ops: on batches)."""
    op = ops.OPS[spec_text.split("(")[0]]
    ds = tf.data.Dataset.from_tensor_slices(images).enumerate()
    key = tf.constant([seed, 0], tf.int64)
    if op.kind == "batch":
        spec = pp.parse(f"normalize|{spec_text}", "spec", ctx)
        batch = pp.batch_fn(spec, normalize=True)
        ds = ds.map(lambda i, x: {"image": x, "label": tf.cast(i % ctx.num_classes, tf.int32)})
        ds = ds.batch(256).enumerate()
        ds = ds.map(
            lambda i, b: batch(b, tf.random.experimental.stateless_fold_in(key, i)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        fn = pp.example_fn(pp.parse(f"{spec_text}|normalize", "spec", ctx))
        ds = ds.map(
            lambda i, x: fn({"image": x}, tf.random.experimental.stateless_fold_in(key, i)),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).batch(256)
    for _ in ds:  # warm-up: tracing and function instantiation
        pass
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for _ in ds:
        pass
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {
        "images_per_sec": len(images) / seconds,
        "images_per_cpu_second": len(images) / cpu if cpu > 0 else float("nan"),
    }


def _change_text(value: float) -> str:
    return "n/a (new size)" if np.isnan(value) else f"{value:.1f}"


def _figure(rows: list[tuple[str, list[np.ndarray]]], path: Path, title: str) -> None:
    cols = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.0 * cols + 2.6, 1.0 * len(rows)))
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            shown = np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8)
            ax.imshow(shown.squeeze(), cmap="gray" if shown.shape[-1] == 1 else None, vmin=0)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / len(rows)))
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80)
    plt.close(fig)
    # A 256-colour palette keeps the committed picture small (about a quarter of the size).
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument(
        "--data_dir",
        default=os.environ.get(
            "TFDS_DATA_DIR", str(ROOT.parent / "shared" / "tensorflow_datasets")
        ),
    )
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument("--num_images", type=int, default=8, help="columns of the picture")
    parser.add_argument(
        "--timing_images", type=int, default=4096, help="test images per throughput pass (scale)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="first one draws")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    images, labels = _images(args.dataset, args.data_dir, max(args.num_images, args.timing_images))
    shown, shown_labels = images[: args.num_images], labels[: args.num_images]
    channels = images.shape[-1]
    ctx = preprocess.context(args.dataset, channels, int(labels.max()) + 1)
    ctx = ops.Context(ctx.mean, ctx.std, ctx.channels, max(ctx.num_classes, 10))
    rgb_only = {"saturation", "hue", "grayscale", "pca_lighting", "color_jitter"}
    rows = [("original", list(shown))]
    results = {}
    for name, spec_text in ROWS.items():
        if channels != 3 and name in rgb_only:
            continue
        per_seed = []
        for seed in args.seeds:
            out = _apply(spec_text, ctx, shown, shown_labels, seed)
            same_size = [o for o, s in zip(out, shown, strict=True) if o.shape == s.shape]
            change = [
                float(np.abs(o - s.astype(np.float32)).mean())
                for o, s in zip(same_size, shown, strict=False)
            ]
            per_seed.append(
                {
                    "seed": seed,
                    "mean_abs_change": float(np.mean(change)) if change else float("nan"),
                    "images_changed": int(
                        sum(
                            o.shape != s.shape or not np.array_equal(o, s)
                            for o, s in zip(out, shown, strict=True)
                        )
                    ),
                }
            )
            if seed == args.seeds[0]:
                rows.append((spec_text, list(out)))
        timing = _throughput(spec_text, ctx, images[: args.timing_images], args.seeds[0])
        results[name] = {
            "spec": spec_text,
            "kind": ops.OPS[name].kind,
            "signature": pp.signature(ops.OPS[name]),
            "per_seed": per_seed,
            **timing,
        }
        print(f"{spec_text:40s} {timing['images_per_sec']:9.0f} img/s", flush=True)
    wall = time.perf_counter() - t_start

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python experiments/augmentations.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    _figure(
        rows,
        out_dir / "augmentations.png",
        f"{args.dataset} test images 0-{args.num_images - 1}: top row as stored, then one op "
        f"per row (seed {args.seeds[0]})",
    )
    meta = {
        "command": command.strip(),
        "dataset": args.dataset,
        "num_images": args.num_images,
        "timing_images": args.timing_images,
        "seeds": args.seeds,
        "wall_seconds": wall,
        "machine": MACHINE,
        "host_cores": len(os.sched_getaffinity(0)),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }
    (out_dir / "augmentations.json").write_text(
        json.dumps({"meta": meta, "ops": results}, indent=1)
    )
    lines = [
        "# Augmentation ops on real images",
        "",
        f"Generated by `{meta['command']}` in {wall:.0f} s on a {MACHINE} "
        f"({meta['host_cores']} cores visible), TensorFlow {tf.__version__}, seeds {args.seeds}.",
        "",
        "![augmentations](augmentations.png)",
        "",
        f"First row: {args.dataset} test images 0-{args.num_images - 1} as stored. Each further "
        "row applies one op, written as its spec (stronger than the default where the default "
        "is hard to see at 32x32), to the same images with the pipeline's seeding. "
        "Throughput: the op alone (without normalize) over "
        f"{args.timing_images} test images in tf.data (`map(num_parallel_calls=AUTOTUNE)`, "
        "batch 256, second pass), i.e. what one op adds to an input pipeline here; mixup and "
        "cutmix run on batches of 256. The machine is shared, so read ratios, not absolutes.",
        "",
        "| op | kind | spec shown | mean abs change (0-255) | images changed | img/s "
        "| img per CPU-s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        first = r["per_seed"][0]
        lines.append(
            f"| {name} | {r['kind']} | `{r['spec']}` | {_change_text(first['mean_abs_change'])} | "
            f"{first['images_changed']}/{args.num_images} | {r['images_per_sec']:,.0f} | "
            f"{r['images_per_cpu_second']:,.0f} |"
        )
    lines += ["", "Signatures (`cnn_arch.data.pp.signature`):", ""]
    lines += [f"- `{r['signature']}`" for r in results.values()]
    (out_dir / "augmentations.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir}/augmentations.png, .json, .md in {wall:.0f} s")


if __name__ == "__main__":
    _runs.run_main(main)
