"""Multi-crop evaluation and ensembles: the mechanisms behind Figure 4 of the BN paper.

Every view is a crop of the eval image, rescaled to the model's input size and
optionally mirrored; a network's prediction is the mean of its softmax over the views,
an ensemble's the mean over its members (Ioffe & Szegedy 2015, Sec. 4.2.3, following
Szegedy et al. 2014, Sec. 6 and 7). Views (``views=``):

- ``single``: the image as the eval pipeline gives it (1 view);
- ``flip``: it and its mirror image (2);
- ``10crop``: the image resized so its shorter side is ``tencrop_scale`` x the crop
  side, its 4 corner and centre crops, each also mirrored (10; Krizhevsky et al. 2012:
  224 crops of 256 images, hence 256/224);
- ``144crop``: GoogLeNet's scheme. The image is resized to each of ``scales`` (shorter
  side = scale x crop side; 256, 288, 320, 352 for 224 crops); of each, the left,
  centre and right squares (top, centre, bottom for portrait images); of each square
  the 4 corners, the centre crop and the square itself resized to the crop side; each
  also mirrored: 4 x 3 x 6 x 2 = 144. The square resized to the crop side does not
  depend on the scale, so 126 of the 144 views are distinct on a landscape image; on a
  square image (CIFAR) the three squares coincide too: 42 distinct views.

Every view is one ``jax.image.scale_and_translate`` (bilinear, antialiased when it
shrinks) of the whole batch; the views are a table of (scale, translation, mirror)
scanned over in one compiled program, so 144 views compile once. A view resamples the
whole image: a crop at a resize factor of 1 is exactly a slice, and a shrunken square's
border pixels also weigh the image pixels just outside the square (where cropping first
and resizing after would repeat the square's edge).

Kinds: ``multicrop`` (the trained network) and ``ensemble`` (it and the networks of
``workdirs``, each restored from its latest checkpoint; same dataset and input shape,
any models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_arch import data, metrics, parallel, steps
from cnn_arch.evaluators.base import Evaluator, padded_batch_size, register

VIEWS = ("single", "flip", "10crop", "144crop")
# GoogLeNet's 144 crops: shorter sides 256, 288, 320, 352 for 224-pixel crops.
GOOGLENET_SCALES = (256 / 224, 288 / 224, 320 / 224, 352 / 224)
TENCROP_SCALE = 256 / 224


def view_table(
    kind: str,
    height: int,
    width: int,
    crop: int,
    *,
    scales: Sequence[float] = GOOGLENET_SCALES,
    tencrop_scale: float = TENCROP_SCALE,
) -> np.ndarray:
    """One row per view: (scale_y, scale_x, translate_y, translate_x, mirror), the
    arguments of ``scale_and_translate`` that map the (height, width) image to a
    (crop, crop) view: output coordinate = input coordinate * scale + translation."""
    if kind not in VIEWS:
        raise ValueError(f"views={kind!r} is not known; choose one of {', '.join(VIEWS)}")
    short = min(height, width)
    rows: list[tuple[float, float, float, float, float]] = []

    def crop_at(r: float, oy: float, ox: float) -> None:
        """The crop whose top-left corner is (oy, ox) in the image resized by r."""
        rows.append((r, r, -oy, -ox, 0.0))

    if kind in ("single", "flip"):
        # The whole image to the crop size (the identity when the image is crop-sized).
        rows.append((crop / height, crop / width, 0.0, 0.0, 0.0))
    elif kind == "10crop":
        r = tencrop_scale * crop / short
        h, w = height * r, width * r
        for oy, ox in ((0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop)):
            crop_at(r, oy, ox)
        crop_at(r, (h - crop) / 2, (w - crop) / 2)
    else:  # 144crop
        for scale in scales:
            side = scale * crop  # the resized shorter side
            r = side / short
            h, w = height * r, width * r
            if w >= h:  # landscape or square: left, centre, right squares
                squares = [(0.0, 0.0), (0.0, (w - side) / 2), (0.0, w - side)]
            else:  # portrait: top, centre, bottom
                squares = [(0.0, 0.0), ((h - side) / 2, 0.0), (h - side, 0.0)]
            for sy, sx in squares:
                for dy, dx in (
                    (0, 0),
                    (0, side - crop),
                    (side - crop, 0),
                    (side - crop, side - crop),
                ):
                    crop_at(r, sy + dy, sx + dx)
                crop_at(r, sy + (side - crop) / 2, sx + (side - crop) / 2)
                # The whole square (side `short` in the original) resized to the crop.
                r_square = crop / short
                rows.append((r_square, r_square, -sy / r * r_square, -sx / r * r_square, 0.0))
    if kind != "single":
        rows += [(*row[:4], 1.0) for row in rows]
    return np.asarray(rows, np.float32)


def render(images: jax.Array, view: jax.Array, crop: int) -> jax.Array:
    """The view ``view`` (one row of ``view_table``) of a batch of NHWC images."""
    out = jax.image.scale_and_translate(
        images,
        (images.shape[0], crop, crop, images.shape[3]),
        spatial_dims=(1, 2),
        scale=view[:2],
        translation=view[2:4],
        method="linear",
        antialias=True,
    )
    return jnp.where(view[4] > 0.5, out[:, :, ::-1, :], out)


def mean_softmax(predict: Callable, variables: Any, images: jax.Array, views: jax.Array, crop: int):
    """Mean over ``views`` of ``softmax(predict(variables, view(images)))``, float32."""

    def add(total, view):
        logits = predict(variables, render(images, view, crop))
        return total + jax.nn.softmax(logits.astype(jnp.float32), axis=-1), None

    first = jax.nn.softmax(predict(variables, render(images, views[0], crop)).astype(jnp.float32))
    total, _ = jax.lax.scan(add, first, views[1:])
    return total / views.shape[0]


@dataclasses.dataclass
class _Member:
    """One network of an ensemble: its inference function and its variables."""

    name: str
    variables: Any
    probs: Callable  # jitted (variables, images) -> mean softmax over the views


def _check_views(name: str, spec, config) -> None:
    from cnn_arch import run as run_lib  # the run builder imports the evaluators

    task = run_lib.task_name(config)
    if task != "classification":
        raise ValueError(
            f"config.evals.{name}: multi-crop and ensembles average class probabilities; "
            f"task {task!r} is not classification"
        )
    views = spec.get("views", "single")
    if views not in VIEWS:
        raise ValueError(f"config.evals.{name}.views={views!r}: choose one of {', '.join(VIEWS)}")
    scales = list(spec.get("scales", GOOGLENET_SCALES))
    if not scales or not all(isinstance(s, int | float) and s >= 1 for s in scales):
        raise ValueError(
            f"config.evals.{name}.scales={scales!r}: a list of numbers >= 1 (the resized "
            "shorter side over the crop side)"
        )
    t = spec.get("tencrop_scale", TENCROP_SCALE)
    if not isinstance(t, int | float) or t < 1:
        raise ValueError(f"config.evals.{name}.tencrop_scale={t!r}: it must be a number >= 1")


@register("multicrop")
@dataclasses.dataclass
class MultiCrop(Evaluator):
    views: str = "flip"
    scales: Sequence[float] = GOOGLENET_SCALES
    tencrop_scale: float = TENCROP_SCALE
    split: str = ""  # '' = config.eval_split

    @staticmethod
    def check_options(name, spec, config) -> None:
        _check_views(name, spec, config)

    def __post_init__(self):
        height, width, _ = self.run.info.image_shape
        self.crop = min(height, width)
        self.table = view_table(
            self.views,
            height,
            width,
            self.crop,
            scales=self.scales,
            tencrop_scale=self.tencrop_scale,
        )
        self._members: list[_Member] = []
        self._compiled: dict[Any, Callable] = {}
        task = self.run.task

        def sums(probs: list[jax.Array], batch):
            mean = sum(probs) / len(probs)
            # log p as logits: softmax(log p) = p, so the loss is the cross-entropy of the
            # averaged distribution and top-k ranks its probabilities.
            return task.eval_sums(jnp.log(jnp.maximum(mean, 1e-12)), batch)

        self._sums = jax.jit(sums)

    def member(self, name: str, model, variables) -> _Member:
        """A network of the average; networks of the same architecture share one compiled
        program (Flax modules are hashable dataclasses)."""
        if model not in self._compiled:
            predict = steps.inference(model)
            table, crop, mesh = jnp.asarray(self.table), self.crop, self.run.mesh
            self._compiled[model] = jax.jit(
                lambda v, images: mean_softmax(predict, v, images, table, crop),
                in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
                out_shardings=parallel.batch_sharding(mesh),
            )
        return _Member(name, variables, self._compiled[model])

    def members(self, state) -> list[_Member]:
        """The trained network (this state) and, for ensembles, the restored others."""
        if not self._members:
            self._members = [self.member("self", self.run.model, None)]
        self._members[0].variables = state.variables
        return self._members

    def __call__(self, state) -> dict[str, float]:
        return self.evaluate(self.members(state))

    def evaluate(self, members: list[_Member]) -> dict[str, float]:
        """Exact metrics of the members' mean probabilities over the whole split."""
        config, info = self.run.config, self.run.info
        if self.split and self.split != config.eval_split:
            config = ml_collections.ConfigDict(config.to_dict())
            config.eval_split = self.split
            info = data.dataset_info(config, self.run.task.data_kind)
        batch_size = padded_batch_size(config.eval_batch_size, self.run.mesh)
        totals = None
        for batch in data.eval_batches(
            config,
            info,
            local_batch_size=batch_size // jax.process_count(),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ):
            batch = parallel.global_batch(self.run.mesh, batch)
            probs = [m.probs(m.variables, batch["image"]) for m in members]
            sums = self._sums(probs, batch)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        result = metrics.averages(jax.device_get(totals))
        result["views"] = float(len(self.table))
        result["members"] = float(len(members))
        return result


@register("ensemble")
@dataclasses.dataclass
class Ensemble(MultiCrop):
    """The trained network and those of ``workdirs`` (latest checkpoints), softmax averaged
    (over ``views`` of each, then over the networks, each network weighted equally)."""

    workdirs: Sequence[str] = ()
    views: str = "single"

    @staticmethod
    def check_options(name, spec, config) -> None:
        _check_views(name, spec, config)
        workdirs = spec.get("workdirs", ())
        if not isinstance(workdirs, list | tuple) or not all(isinstance(w, str) for w in workdirs):
            raise ValueError(f"config.evals.{name}.workdirs must be a list of training workdirs")

    def members(self, state) -> list[_Member]:
        first = not self._members
        members = super().members(state)
        if first:
            members += [self._restore(w) for w in self.workdirs]
        return members

    def _restore(self, workdir: str) -> _Member:
        from cnn_arch import run as run_lib  # the run builder imports the evaluators

        data_dir = self.run.config.data_dir or None
        other, state = run_lib.from_workdir(workdir, data_dir=data_dir, mesh=self.run.mesh)
        mine, theirs = self.run.config, other.config
        if (theirs.dataset, other.info.image_shape, other.info.num_classes) != (
            mine.dataset,
            self.run.info.image_shape,
            self.run.info.num_classes,
        ):
            raise ValueError(
                f"ensemble member {workdir} is {theirs.model} on {theirs.dataset} "
                f"{other.info.image_shape} with {other.info.num_classes} classes; this run is "
                f"{mine.dataset} {self.run.info.image_shape} with {self.run.info.num_classes}"
            )
        return self.member(workdir, other.model, state.variables)
