"""The distribution of one unit's activations over training (Ioffe & Szegedy 2015, Fig. 1b,c).

``activations`` runs the network in inference mode on a fixed set of eval images (the
first ``num_images`` of the eval split), captures the output of one named module with
Flax's ``capture_intermediates`` and reports percentiles of one of its features over
those images. Figure 1(b, c) of the BN paper is the {15, 50, 85}th percentiles of the
input to a fixed sigmoid of the last hidden layer: for the MLP that input is the output
of ``hidden3`` (no BN) or of ``hidden3_norm`` (BN before the sigmoid, Sec. 3.2).

Capturing costs nothing when it is not asked for: only this evaluator's own jitted
forward pass captures anything; the train step and the other evaluators are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from cnn_arch import data, parallel
from cnn_arch.evaluators.base import Evaluator, padded_batch_size, register


def module_output(model, variables, images, module: str) -> jax.Array:
    """The output of the submodule at path ``module`` ('hidden3_norm', or 'a/b' for nested
    ones) of ``model`` in inference mode on ``images``; ValueError if it never ran."""
    path = tuple(module.split("/"))

    def wanted(mdl, method_name: str) -> bool:
        return method_name == "__call__" and tuple(mdl.path) == path

    _, state = model.apply(
        variables, images, train=False, capture_intermediates=wanted, mutable=["intermediates"]
    )
    node = state.get("intermediates", {})
    for name in path:
        if name not in node:
            raise ValueError(f"module {module!r} is not a submodule the network calls")
        node = node[name]
    return node["__call__"][0]


def _check_percentiles(name: str, values) -> None:
    ok = isinstance(values, list | tuple) and values
    if not ok or not all(isinstance(v, int | float) and 0 <= v <= 100 for v in values):
        raise ValueError(
            f"config.evals.{name}.percentiles={values!r}: it must be a list of numbers in [0, 100]"
        )


def percentile_key(q: float) -> str:
    """'p15' for 15, 'p2.5' for 2.5: the metric name of a percentile."""
    return f"p{q:g}"


@register("activations")
@dataclasses.dataclass
class Activations(Evaluator):
    module: str = ""  # path of the module whose output is captured, e.g. 'hidden3_norm'
    unit: int = 0  # which feature (last axis) of that output
    num_images: int = 1000  # the first this many eval images, the same at every call
    percentiles: Sequence[float] = (15, 50, 85)
    split: str = ""  # '' = config.eval_split

    @staticmethod
    def check_options(name, spec, config) -> None:
        if not isinstance(spec.get("module", ""), str) or not spec.get("module"):
            raise ValueError(
                f"config.evals.{name}.module must name the module whose output is captured "
                "(e.g. 'hidden3_norm')"
            )
        for key, low in (("unit", 0), ("num_images", 1)):
            v = spec.get(key, low)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"config.evals.{name}.{key}={v!r}: it must be an integer >= {low}")
        _check_percentiles(name, list(spec.get("percentiles", (15, 50, 85))))

    def __post_init__(self):
        self._images = None
        run = self.run
        self._capture = jax.jit(
            lambda variables, images: module_output(run.model, variables, images, self.module),
            in_shardings=(parallel.replicated(run.mesh), parallel.batch_sharding(run.mesh)),
            out_shardings=parallel.replicated(run.mesh),
        )

    def fixed_images(self) -> list[np.ndarray]:
        """The first ``num_images`` eval images, in eval batches (read once, then kept)."""
        if self._images is None:
            config = self.run.config
            info = self.run.info
            if self.split and self.split != config.eval_split:
                config = ml_collections.ConfigDict(config.to_dict())
                config.eval_split = self.split
                info = data.dataset_info(config, self.run.task.data_kind)
            batch = padded_batch_size(config.eval_batch_size, self.run.mesh)
            kept, n = [], 0
            for b in data.eval_batches(config, info, local_batch_size=batch):
                real = int(b["mask"].sum())
                take = min(real, self.num_images - n)
                kept.append((b["image"], take))
                n += take
                if n >= self.num_images:
                    break
            self._images = kept
        return self._images

    def features(self, variables) -> np.ndarray:
        """Every feature of the module's output on every fixed image (and every spatial
        position, for conv features), float64, shape (N * positions, features)."""
        out = []
        for images, take in self.fixed_images():
            images = parallel.global_batch(self.run.mesh, {"image": images})["image"]
            feature = np.asarray(jax.device_get(self._capture(variables, images)), np.float64)
            out.append(feature[:take].reshape(-1, feature.shape[-1]))
        return np.concatenate(out)

    def values(self, variables) -> np.ndarray:
        """The captured feature ``unit`` on every fixed image (and position), shape (N,)."""
        features = self.features(variables)
        if self.unit >= features.shape[-1]:
            raise ValueError(
                f"unit={self.unit} but module {self.module!r} has {features.shape[-1]} features"
            )
        return features[:, self.unit]

    def __call__(self, state):
        v = self.values(state.variables)
        result = {
            percentile_key(q): float(p)
            for q, p in zip(self.percentiles, np.percentile(v, list(self.percentiles)), strict=True)
        }
        num_images = sum(take for _, take in self.fixed_images())
        result.update(mean=float(v.mean()), std=float(v.std()), num_examples=num_images)
        return result
