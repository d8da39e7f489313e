"""Where BN goes (issue 15, study 3): ``norm_position`` in every family that takes it
(norm layers, their inputs, the biases each placement keeps) and
experiments/norm_placement.py (its configs, its numbers, its bad input; the smoke scale
end to end under -m slow)."""

from __future__ import annotations

import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_experiment
from flax.traverse_util import flatten_dict

from cnn_arch import models
from cnn_arch.errors import UserError
from cnn_arch.models import layers
from cnn_arch.validate import validate_config

sys.path.insert(0, str(ROOT / "experiments"))
import norm_placement  # noqa: E402

# Each family at a cheap size, with the input it takes; norm='batch' everywhere.
FAMILIES = {
    "mlp": ("mlp", {"norm": "batch"}, (2, 28, 28, 1)),
    "lenet5": ("lenet5", {"norm": "batch"}, (2, 28, 28, 1)),
    "vgg": (
        "vgg11_bn",
        {"width_multiplier": 0.125, "fc_width": 0, "pool_size": 1, "conv_bias": False},
        (2, 32, 32, 3),
    ),
    "resnet": ("resnet20", {"stage_sizes": (1, 1, 1)}, (2, 32, 32, 3)),
}
# The layers with weights, in order, and the ones a nonlinearity follows (all but the
# classifier; in a post-activation ResNet unit the last conv meets the sum first).
WEIGHT_LAYERS = {
    "mlp": ["hidden1", "hidden2", "hidden3", "head"],
    "lenet5": ["conv1", "conv2", "fc1", "fc2", "head"],
    "vgg": ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1"]
    + ["conv5_2", "head"],
    "resnet": ["conv1", "layer1_0/conv1", "layer1_0/conv2", "layer2_0/conv1"]
    + ["layer2_0/conv2", "layer3_0/conv1", "layer3_0/conv2", "fc"],
}
CLASSIFIER = {"mlp": "head", "lenet5": "head", "vgg": "head", "resnet": "fc"}
RESNET_BRANCH_ENDS = {"layer1_0/conv2", "layer2_0/conv2", "layer3_0/conv2"}


def _positions(family: str) -> tuple[str, ...]:
    name = FAMILIES[family][0]
    return models.spec(name).module_cls.CHOICES["norm_position"]


def _structure(family: str, position: str):
    """(norm layer names, weight layers with a bias, params) of one placement."""
    name, kwargs, shape = FAMILIES[family]
    model = models.create(name, norm_position=position, **kwargs)
    v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), jnp.zeros(shape))
    norms = {k.rsplit("/", 1)[0] for k in flatten_dict(v.get("batch_stats", {}), sep="/")}
    params = flatten_dict(v["params"], sep="/")
    biased = {k.rsplit("/", 1)[0] for k in params if k.endswith("/bias")} - norms
    return norms, biased, params


def _n(params: dict) -> int:
    return sum(int(np.prod(a.shape)) for a in params.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_takes_the_slides_placements_and_refuses_input(family):
    positions = _positions(family)
    assert {"before", "after", "network_input", "none"} <= set(positions)
    assert set(positions) <= set(layers.NORM_POSITIONS)
    name, kwargs, _ = FAMILIES[family]
    with pytest.raises(ValueError, match="network_input"):  # the old ambiguous name is gone
        models.create(name, norm_position="input", **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_network_input_is_the_plain_net_plus_one_norm_on_the_raw_input(family):
    norms, biased, params = _structure(family, "network_input")
    none_norms, none_biased, none_params = _structure(family, "none")
    assert norms == {"input_norm"} and none_norms == set()
    channels = 784 if family == "mlp" else FAMILIES[family][2][-1]  # the MLP: flat pixels
    assert params["input_norm/scale"].shape == params["input_norm/bias"].shape == (channels,)
    assert _n(params) == _n(none_params) + 2 * channels
    assert biased == none_biased == set(WEIGHT_LAYERS[family])  # nothing normalizes inside


@pytest.mark.parametrize("family", FAMILIES)
def test_before_drops_the_biases_a_norm_replaces_and_after_keeps_them(family):
    before_norms, before_biased, before_params = _structure(family, "before")
    after_norms, after_biased, after_params = _structure(family, "after")
    assert before_norms == after_norms and len(before_norms) == len(WEIGHT_LAYERS[family]) - 1
    # Sec. 3.2: a norm right after a layer makes its bias redundant; the classifier keeps its
    assert before_biased == {CLASSIFIER[family]}
    expected_after = set(WEIGHT_LAYERS[family])
    if family == "resnet":  # the branch's last conv is still followed by a norm directly
        expected_after -= RESNET_BRANCH_ENDS
    assert after_biased == expected_after
    extra = sum(after_params[f"{k}/bias"].size for k in after_biased - before_biased)
    assert _n(after_params) == _n(before_params) + extra


@pytest.mark.parametrize("family", ["mlp", "lenet5", "vgg"])
def test_layer_input_puts_a_norm_before_every_hidden_layer(family):
    norms, biased, params = _structure(family, "layer_input")
    hidden = WEIGHT_LAYERS[family][:-1]
    assert norms == {f"{k}_norm" for k in hidden} and biased == set(WEIGHT_LAYERS[family])
    first = params[f"{hidden[0]}_norm/scale"].shape[0]
    assert first == (784 if family == "mlp" else FAMILIES[family][2][-1])  # the raw input


def _norm_inputs(family: str, position: str, x) -> dict[str, np.ndarray]:
    """The input of every BatchNorm call of one training forward, by module path, with
    random variables of the model's shapes (op by op: no init, nothing to compile)."""
    name, kwargs, _ = FAMILIES[family]
    model = models.create(name, norm_position=position, **kwargs)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda a: 0.1 * rng.normal(size=a.shape).astype(np.float32), shapes)
    seen = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            seen["/".join(context.module.path)] = np.asarray(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, x, train=True, mutable=["batch_stats"])
    return seen


@pytest.mark.parametrize(
    "family",
    # op by op every conv compiles on its own: VGG and ResNet take tens of seconds here
    [
        "mlp",
        pytest.param("vgg", marks=pytest.mark.slow),
        pytest.param("resnet", marks=pytest.mark.slow),
    ],
)
def test_the_norms_see_what_their_placement_says(family):
    shape = FAMILIES[family][2]
    x = jax.random.normal(jax.random.key(0), (4, *shape[1:]))
    after = _norm_inputs(family, "after", x)
    before = _norm_inputs(family, "before", x)
    assert set(after) == set(before)
    lower = 0.0  # ReLU outputs; the MLP's sigmoid outputs lie in (0, 1)
    for path, inp in after.items():
        if family == "resnet" and path.endswith("/bn2"):  # branch end: conv output
            assert inp.min() < 0
            continue
        assert inp.min() >= lower, path
        if family == "mlp":
            assert inp.max() < 1.0
    assert all(inp.min() < 0 for inp in before.values())  # pre-activations: both signs
    (only,) = _norm_inputs(family, "network_input", x).values()  # the raw input itself
    flat = x.reshape(4, -1) if family == "mlp" else x
    np.testing.assert_array_equal(only, flat)


# --- experiments/norm_placement.py ------------------------------------------------------


@pytest.mark.parametrize("scale", ["default", "full", "smoke"])
@pytest.mark.parametrize("network", norm_placement.NETWORKS)
def test_every_placement_config_is_valid_and_differs_only_in_the_placement(network, scale):
    build = norm_placement.CONFIGS[network]
    configs = {
        p: build(p, norm_placement.SCALES[scale][network], 0, "/tmp")
        for p in norm_placement.PLACEMENTS
    }
    for config in configs.values():
        validate_config(config, device_count=1)
    ref = configs["before"].to_dict()
    for p, config in configs.items():
        d = config.to_dict()
        assert d["model_kwargs"].pop("norm_position") == p
        assert {k: v for k, v in d.items() if k != "model_kwargs"} == {
            k: v for k, v in ref.items() if k != "model_kwargs"
        }
        assert d["model_kwargs"] == {
            k: v for k, v in ref["model_kwargs"].items() if k != "norm_position"
        }


def test_the_mlp_is_the_bn_papers_network_at_bn_mnists_rate():
    from configs import bn_mnist

    c = norm_placement.mlp_config("before", norm_placement.SCALES["default"]["mlp"], 0, "/d")
    paper = bn_mnist.get_config("bn")
    assert c.model == paper.model == "mlp" and c.batch_size == paper.batch_size == 60
    assert c.model_kwargs.activation == "sigmoid" and c.model_kwargs.init_stddev == 0.1
    assert (c.optimizer, c.momentum, c.schedule) == ("sgd", 0.0, "constant")
    assert c.learning_rate == 1.0 and c.eval_split == "test" and c.train_split == "train"


def _write_metrics(workdir, rows):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def test_run_result_reads_the_last_numbers_and_the_first_step_at_target(tmp_path):
    rows = [
        {"step": 10, "split": "train", "loss": 2.0},
        {"step": 10, "split": "eval", "top1": 0.40},
        {"step": 20, "split": "train", "loss": 1.0},
        {"step": 20, "split": "eval", "top1": 0.61},
        {"step": 30, "split": "train", "loss": 0.5},
        {"step": 30, "split": "eval", "top1": 0.58},
    ]
    _write_metrics(tmp_path / "a", rows)
    r = norm_placement.run_result(str(tmp_path / "a"), target=0.6)
    assert (r["test_top1"], r["train_loss"], r["steps_to_target"]) == (0.58, 0.5, 20)
    assert norm_placement.run_result(str(tmp_path / "a"), target=0.7)["steps_to_target"] is None
    runs = {"mlp": {"before": {"0": r, "1": {**r, "test_top1": 0.62, "steps_to_target": None}}}}
    s = norm_placement.summarize(runs, [0, 1])["mlp"]["before"]
    assert s["test_top1"]["mean"] == pytest.approx(0.60) and s["seeds_reaching_target"] == 1
    assert s["steps_to_target_mean"] == 20.0


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--seeds=-1", "--seeds=[-1]"),
        ("--seeds=a", "--seeds='a'"),
        ("--placements=before,input", "--placements='before,input'"),
        ("--workers=0", "--workers=0"),
    ],
)
def test_bad_input_is_a_user_error_before_anything_trains(flag, message, tmp_path):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        norm_placement.main([flag, f"--workdir={tmp_path}", f"--out_dir={tmp_path}"])
    assert not list(tmp_path.iterdir())


def test_bad_input_is_one_error_line_and_exit_2(tmp_path):
    proc = run_experiment("norm_placement.py", "--placements=input", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --placements='input': choose distinct names from "
        + ", ".join(norm_placement.PLACEMENTS)
    ]


@pytest.mark.slow
def test_smoke_scale_writes_every_number_table_and_figure(tmp_path, shared_tfds):
    out = tmp_path / "out"
    report = norm_placement.main(
        [
            "--scale=smoke",
            "--seeds=0",
            "--workers=1",
            f"--data_dir={shared_tfds}",
            f"--workdir={tmp_path / 'work'}",
            f"--out_dir={out}",
        ]
    )
    saved = json.loads((out / "norm_placement.json").read_text())
    assert saved["summary"] == report["summary"]
    assert (out / "norm_placement.png").stat().st_size > 10_000
    md = (out / "norm_placement.md").read_text()
    assert "Sec. 3.2" in md and "python experiments/norm_placement.py --scale=smoke" in md
    for network in norm_placement.NETWORKS:
        scale = norm_placement.SCALES["smoke"][network]
        for placement in norm_placement.PLACEMENTS:
            run = saved["runs"][network][placement]["0"]
            assert run["curves"]["eval_steps"][-1] == scale["steps"]
            assert 0.0 <= run["test_top1"] <= 1.0 and np.isfinite(run["train_loss"])
    # the MLP learns in 40 steps wherever BN sits (chance is 0.1)
    assert min(saved["runs"]["mlp"][p]["0"]["test_top1"] for p in ("before", "after")) > 0.5
