"""Shared blocks (issue 8 item 9): one place for shared layers, no family importing
another for a block, and the SE gate on every family with a residual or concat block."""

from __future__ import annotations

import ast
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_arch import models
from cnn_arch.models import blocks, layers

MODELS_DIR = pathlib.Path(models.__file__).parent
SHARED = {"registry", "layers", "blocks", "options", "cost", "__init__"}


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(imported cnn_arch.models submodule, imported at module level?) for each import."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "cnn_arch.models":
                names = [a.name for a in node.names]
            elif node.module.startswith("cnn_arch.models."):
                names = [node.module.split(".")[2]]
        elif isinstance(node, ast.Import):
            names = [
                a.name.split(".")[2] for a in node.names if a.name.startswith("cnn_arch.models.")
            ]
        found += [(n, id(node) in top) for n in names]
    return found


def test_families_import_only_shared_modules_at_top_level():
    families = sorted(p for p in MODELS_DIR.glob("*.py") if p.stem not in SHARED)
    assert len(families) >= 14
    for path in families:
        for module, top_level in _imports(path):
            assert top_level, f"{path.name} imports {module} inside a function"
            # se.py registers configurations of resnet.ResNet; nothing else crosses families
            allowed = SHARED | ({"resnet"} if path.stem == "se" else set())
            assert module in allowed, f"{path.name} imports the family file {module}.py"
    assert all(m != "se" for m, _ in _imports(MODELS_DIR / "resnet.py"))


def se_params(channels: int, r: int) -> int:
    """SqueezeExcite parameters: FC C -> C/r and C/r -> C, both with biases (Hu et al. Sec. 3)."""
    hidden = max(1, channels // r)
    return channels * hidden + hidden + hidden * channels + channels


def n_params(model, shape) -> int:
    init = functools.partial(model.init, train=False)
    variables = jax.eval_shape(init, jax.random.key(0), jnp.zeros(shape))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))


# name, se_ratio, shape, extra create() options, the gated blocks' channels (papers' tables).
SE_CASES = [
    # GoogLeNet Table 1 outputs of 3a..5b
    ("googlenet", 16, (1, 32, 32, 3), {}, [256, 480, 512, 512, 512, 528, 832, 832, 1024]),
    # BN paper Fig. 5 (widths' sums; see bn_inception.py), 3a..5b
    ("bn_inception", 16, (1, 32, 32, 3), {}, [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]),
    # Fire 2..9 outputs (expand1x1 + expand3x3)
    ("squeezenet1_1", 16, (1, 32, 32, 3), {}, [128, 128, 256, 256, 384, 384, 512, 512]),
    # the k=12 new maps of each of the 3 x 2 dense layers
    ("densenet_bc100", 4, (1, 16, 16, 3), {"block_sizes": (2, 2, 2)}, [12] * 6),
    # the right branch (out/2 channels) of the 4 + 8 + 4 units, Table 5 widths 48/96/192
    ("shufflenet_v2_x0_5", 4, (1, 32, 32, 3), {}, [24] * 4 + [48] * 8 + [96] * 4),
    # the residual branch of each unit (16/32/64 channels)
    ("resnet20", 4, (1, 16, 16, 3), {"stage_sizes": (1, 2, 1)}, [16, 32, 32, 64]),
]


@pytest.mark.parametrize("name, r, shape, extra, channels", SE_CASES, ids=[c[0] for c in SE_CASES])
def test_se_ratio_gates_each_block(name, r, shape, extra, channels):
    plain = n_params(models.create(name, num_classes=10, **extra), shape)
    gated = n_params(models.create(name, num_classes=10, se_ratio=r, **extra), shape)
    assert gated - plain == sum(se_params(c, r) for c in channels)


def test_se_block_scales_channels():
    se = blocks.SqueezeExcite(reduction=4)
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 16))
    v = se.init(jax.random.key(1), x)
    assert v["params"]["fc1"]["kernel"].shape == (16, 4) and "bias" in v["params"]["fc2"]
    gate = se.apply(v, x) / x  # one value in (0, 1) per (sample, channel)
    assert bool(jnp.all((gate > 0) & (gate < 1)))
    np.testing.assert_allclose(gate, jnp.broadcast_to(gate[:, :1, :1, :], gate.shape), rtol=1e-5)


def test_conv_norm_act_names_and_order():
    """``ConvNormAct`` keeps the tree of the families' old units: ``conv`` then ``norm``."""
    unit = blocks.ConvNormAct(8, 3, 1, 1, norm="batch")
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))
    v = unit.init(jax.random.key(1), x, train=False)
    assert jax.tree.map(jnp.shape, v["params"]) == {
        "conv": {"kernel": (3, 3, 3, 8)},  # no bias: the norm follows (BN paper Sec. 3.2)
        "norm": {"scale": (8,), "bias": (8,)},
    }
    y, _ = unit.apply(v, x, train=True, mutable=["batch_stats"])
    z = jax.lax.conv_general_dilated(
        x, v["params"]["conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
    want = jnp.maximum((z - mean) / jnp.sqrt(var + layers.BN_EPSILON), 0.0)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
