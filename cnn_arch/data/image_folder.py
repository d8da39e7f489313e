"""A TFDS dataset of JPEG bytes from a ``<split>/<class>/<image>.jpg`` tree (folder or .tgz).

ImageNet reaches the input pipeline as TFRecord shards of undecoded JPEG bytes; this
writes any folder of JPEGs in that same form, so the ImageNet recipe (fused JPEG decode
+ random-resized crop, Szegedy et al. 2015 Sec. 6) can be run and timed without
ImageNet. The bytes are stored as they are (no re-encoding). Labels are the class
folder names in sorted order (for the CIFAR-10 JPEG copy: airplane 0 ... truck 9).

    python -m cnn_arch.data.image_folder --src=../shared/data/cifar10_jpg.tgz \
        --data_dir=/tmp/tfds --name=cifar10_jpeg
"""

from __future__ import annotations

import collections
import os
import tarfile
from collections.abc import Iterator

import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_arch.errors import UserError

VERSION = "1.0.0"
IMAGE_SUFFIXES = (".jpg", ".jpeg")


def _members(src: str) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """(path parts, bytes) of every JPEG under ``src`` (a folder or a tar archive)."""
    if os.path.isdir(src):
        for folder, _, files in sorted(os.walk(src)):
            for name in sorted(files):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    path = os.path.join(folder, name)
                    with open(path, "rb") as f:
                        yield tuple(os.path.relpath(path, src).split(os.sep)), f.read()
        return
    with tarfile.open(src) as tar:
        for member in tar:
            if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                yield tuple(member.name.split("/")), tar.extractfile(member).read()


def read_tree(src: str) -> dict[str, dict[str, list[bytes]]]:
    """{split: {class: [jpeg bytes, ...]}} from ``.../<split>/<class>/<file>`` paths."""
    tree: dict[str, dict[str, list[bytes]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for parts, data in _members(src):
        if len(parts) < 3:
            continue
        split, label = parts[-3], parts[-2]
        tree[split][label].append(data)
    if not tree:
        raise UserError(f"no <split>/<class>/*.jpg images found in {src}")
    return tree


def prepare(src: str, data_dir: str, name: str) -> str:
    """Writes ``src`` as TFDS dataset ``name`` into ``data_dir`` (once); returns its path."""
    path = os.path.join(data_dir, name, VERSION)
    if os.path.isdir(path):
        return path
    tree = read_tree(src)
    classes = sorted({c for split in tree.values() for c in split})
    splits = {}
    for split, by_class in tree.items():
        images = [b for c in classes for b in by_class.get(c, [])]
        labels = [i for i, c in enumerate(classes) for _ in by_class.get(c, [])]
        splits[split] = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=classes),
        }
    )
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version=VERSION,
        data_dir=data_dir,
        features=features,
        split_datasets=splits,
        description=f"JPEG images of {src} stored undecoded ({len(classes)} classes).",
    )
    return path


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="folder or .tgz with <split>/<class>/*.jpg")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    print(prepare(args.src, args.data_dir, args.name))


if __name__ == "__main__":
    main()
