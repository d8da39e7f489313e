"""torchvision weights converted into our models give torchvision's outputs.

Equal parameter counts do not prove equal networks; equal outputs on the same
weights do. Each torchvision model gets random weights (He-uniform, random BN
scales/biases and conv/linear biases, so a swapped or dropped tensor shows) and
non-trivial BN running statistics (estimated on a random batch, then perturbed per
channel, so eval and train mode differ); our converted model must give the same
logits to 1e-4 of their largest magnitude, in float32.

Without torch/torchvision installed these tests skip, except in CI (CI=true), which
installs the [torch] extra and must run them.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cnn_arch import models
from cnn_arch.convert import __main__ as cli
from cnn_arch.convert import convert, from_torchvision, load_converted, provenance
from cnn_arch.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4  # of the largest |logit|
NON_SQUARE = (199, 257)
TRAIN_SIZE = (128, 160)  # non-square; even maps down to DenseNet's last block

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
RESNETS += ["resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"]
VGGS = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
DENSENETS = [f"densenet{d}" for d in (121, 161, 169, 201)]
SHUFFLENETS = [f"shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0")]
# 'googlenet_aux' is googlenet built and converted with its two auxiliary heads.
ALL = ["alexnet", *VGGS, "googlenet", "googlenet_aux", *RESNETS, *DENSENETS]
ALL += ["squeezenet1_0", "squeezenet1_1", *SHUFFLENETS]
# The default run compares one or two models per family's code path in eval mode at
# 224x224, at a non-square size (the rounding of strided convs and pools: resnet50
# covers resnet18's 3x3/2 too) and in train mode. `make test-convert` (which CI runs)
# compares every model in every mode.
EVAL_DEFAULT = {"alexnet", "vgg11", "vgg11_bn", "googlenet", "resnet18", "resnext50_32x4d"}
EVAL_DEFAULT |= {"densenet121", "squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x0_5"}
NON_SQUARE_DEFAULT = {"alexnet", "vgg11_bn", "googlenet_aux", "resnet50"}
NON_SQUARE_DEFAULT |= {"densenet121", "squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x1_0"}
# Train mode: GoogLeNet (its aux heads, BN eps 1e-3), a bottleneck ResNet, ShuffleNet.
TRAIN_DEFAULT = {"googlenet_aux", "resnet50", "shufflenet_v2_x0_5"}
BN_FREE = {"alexnet", "squeezenet1_0", "squeezenet1_1"} | {v for v in VGGS if "_bn" not in v}


def _case(model: str, mode: str, size: tuple[int, int], default: bool):
    marks = [] if default else [pytest.mark.slow]
    return pytest.param(model, mode, size, marks=marks, id=f"{model}-{mode}-{size[0]}x{size[1]}")


# Ordered by model, train mode last: consecutive cases reuse one converted model.
CASES = []
for _m in ALL:
    CASES.append(_case(_m, "eval", (224, 224), _m in EVAL_DEFAULT))
    CASES.append(_case(_m, "eval", NON_SQUARE, _m in NON_SQUARE_DEFAULT))
    if _m not in BN_FREE:
        CASES.append(_case(_m, "train", TRAIN_SIZE, _m in TRAIN_DEFAULT))


@pytest.fixture(scope="module")
def torch():
    """torch and torchvision, or a skip (a failure in CI, which must run these tests)."""
    # torchvision imports torch._dynamo, which imports triton (a GPU kernel compiler);
    # loading triton's LLVM after TensorFlow's, as other test files do in this process,
    # segfaults. Nothing here compiles GPU kernels, so torch is told triton is absent.
    sys.modules.setdefault("triton", None)
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("torch/torchvision not installed: pip install -e '.[torch]'")
    torch.set_num_threads(1)  # faster than 2 on a shared 2-core machine
    return torch


def _split(model: str) -> tuple[str, dict]:
    """Our test id -> (torchvision name, its constructor options)."""
    if model.startswith("googlenet"):
        return "googlenet", {"aux_logits": model.endswith("_aux"), "init_weights": False}
    return model, {}


def torchvision_model(torch, model: str, seed: int = 0):
    """A torchvision model with random weights and perturbed batch statistics, in eval mode."""
    import torchvision

    name, kwargs = _split(model)
    with torch.device("meta"):  # skip torchvision's own (slow) init; we fill every tensor
        net = torchvision.models.get_model(name, weights=None, **kwargs)
    net = net.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for key, t in net.state_dict().items():
            if not t.is_floating_point():
                t.zero_()
            elif key.endswith(("running_mean", "running_var")):
                pass  # estimated below
            elif t.ndim > 1:  # He-uniform: keeps activations O(1) through the ReLU nets
                bound = (6.0 / t[0].numel()) ** 0.5
                t.uniform_(-bound, bound, generator=g)
            elif key.endswith("bias"):
                t.uniform_(-0.2, 0.2, generator=g)
            else:  # BN scale
                t.uniform_(0.5, 1.5, generator=g)
        # Running statistics: those of one random batch, then moved per channel.
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: after one batch, that batch's stats
        net.train()
        net(torch.randn(2, 3, 64, 64, generator=g))
        for bn in bns:
            bn.momentum = 0.1
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.2 * std * torch.randn(std.shape, generator=g))
            bn.running_var.mul_(torch.empty_like(std).uniform_(0.5, 2.0, generator=g))
    return net.eval()


def our_model(model: str, **overrides) -> nn.Module:
    name, kwargs = _split(model)
    if name == "googlenet":
        overrides["aux_logits"] = kwargs["aux_logits"]
    return models.create(name, num_classes=1000, **overrides)


def _no_dropout(model: str) -> dict:
    """Options that switch our dropout off (ResNet, DenseNet, ShuffleNet have none)."""
    if model.startswith("googlenet"):
        return {"dropout_rate": 0.0, "aux_dropout_rate": 0.0}
    if model.startswith(("alexnet", "vgg", "squeezenet")):
        return {"dropout_rate": 0.0}
    return {}


def ours(model: str, variables: dict, x_nchw: np.ndarray, *, train: bool):
    """Our model's outputs (train: and updated variables) and its BatchNorm epsilons."""
    net = our_model(model, **(_no_dropout(model) if train else {}))
    x = jnp.asarray(x_nchw.transpose(0, 2, 3, 1))
    mutable = ["batch_stats"] if train else False
    # XLA's default optimization level: level 0 compiles a little faster, but with
    # convolutions left to XLA's own emitter (cnn_arch.xla_tuning) ResNet-18 then ran
    # 10x slower (10.3 s vs 1.1 s at 224x224).
    fn = jax.jit(lambda v, x: net.apply(v, x, train=train, mutable=mutable))
    epsilons: set[float] = set()

    def record(next_fun, args, kwargs, context):  # runs while jit traces the model
        if isinstance(context.module, nn.BatchNorm):
            epsilons.add(float(context.module.epsilon))
        return next_fun(*args, **kwargs)

    with jax.default_matmul_precision("highest"), nn.intercept_methods(record):
        return jax.device_get(fn(variables, x)), epsilons


def relative_error(actual, expected) -> float:
    """max |actual - expected| over max |expected| (1e-4 here: 4 float32 digits of the
    largest logit; an elementwise rtol would fail on logits that happen to be near 0)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max())
    assert scale > 0 and float(expected.std()) > 0, "degenerate reference outputs"
    return float(np.abs(actual - expected).max()) / scale


def assert_logits_close(actual, expected, what: str, tolerance: float = TOLERANCE) -> None:
    err = relative_error(actual, expected)
    assert err <= tolerance, f"{what}: max |ours - torchvision| = {err:.3g} of the largest logit"


_CONVERTED: dict[str, tuple] = {}


def converted(torch, model: str):
    """(torchvision model, our converted variables), kept for the model's next case."""
    if model not in _CONVERTED:
        _CONVERTED.clear()
        net = torchvision_model(torch, model)
        _CONVERTED[model] = net, from_torchvision(_split(model)[0], net.state_dict())
    return _CONVERTED[model]


@pytest.mark.parametrize("model,mode,size", CASES)
def test_outputs_equal_torchvision(torch, model, mode, size):
    """Eval: running statistics. Train: the batch's statistics, dropout off on both sides."""
    net, variables = converted(torch, model)
    x = torch.randn(
        2 if mode == "train" else 1, 3, *size, generator=torch.Generator().manual_seed(1)
    )
    torch_eps = {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    if mode == "eval":
        with torch.no_grad():
            expected = net(x).numpy()
        actual, eps = ours(model, variables, x.numpy(), train=False)
        assert eps == torch_eps
        assert_logits_close(actual, expected, f"{model} eval at {size}")
        return
    _CONVERTED.clear()  # torch's train step below changes its running statistics
    # Normalizing with the statistics of 2 small maps (40 values per channel in the last
    # stage here) is ill-conditioned: torchvision's own float32 ResNet-152 is 4e-4 off
    # its float64 twin in train mode. So the float64 torch model is the reference, and
    # ours may be off it by 1e-4 or twice torchvision's float32 error, whichever is larger.
    exact = copy.deepcopy(net).double()
    outputs = []
    for m, dtype in ((net, torch.float32), (exact, torch.float64)):
        m.train()
        for dropout in (d for d in m.modules() if isinstance(d, torch.nn.Dropout)):
            dropout.eval()
        with torch.no_grad():
            out = m(x.to(dtype))
        # torchvision's GoogLeNet returns (logits, aux2, aux1); ours (logits, aux1, aux2).
        out = [out.logits, out.aux_logits1, out.aux_logits2] if model == "googlenet_aux" else [out]
        outputs.append([o.numpy() for o in out])
    (actual, updated), eps = ours(model, variables, x.numpy(), train=True)
    assert eps == torch_eps
    actual = list(actual) if model == "googlenet_aux" else [actual]
    for i, (a, e32, e64) in enumerate(zip(actual, *outputs, strict=True)):
        tolerance = max(TOLERANCE, 2 * relative_error(e32, e64))
        assert_logits_close(a, e64, f"{model} train, output {i}", tolerance)
    # Both move the running means 0.1 of the way to the batch means (PyTorch's momentum
    # 0.1 is Flax's 0.9): ours must match the float64 torch model's as closely as the
    # float32 one does (or to 1e-5 of the layer's largest mean).
    got = traverse_util.flatten_dict({"batch_stats": updated["batch_stats"]})
    after32, after64 = (
        traverse_util.flatten_dict(from_torchvision(_split(model)[0], m.state_dict()))
        for m in (net, exact)
    )
    assert got.keys() == {k for k in after64 if k[0] == "batch_stats"}
    for key in (k for k in got if k[-1] == "mean"):
        tolerance = max(1e-5, 2 * relative_error(after32[key], after64[key]))
        assert_logits_close(got[key], after64[key], f"running mean {key}", tolerance)


# --- the converter's checks and files ------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_state(torch):
    """A torchvision ResNet-18 state_dict as numpy arrays (its default random init)."""
    import torchvision

    torch.manual_seed(0)
    return {k: v.numpy().copy() for k, v in torchvision.models.resnet18().state_dict().items()}


def _with(state: dict, **changes) -> dict:
    """A copy of ``state`` with keys replaced (an array) or removed (None); '__' = '.'."""
    out = dict(state)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del out[key]
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"layer2__0__downsample__1__running_var": None},
            r"'layer2\.0\.downsample\.1\.running_var' \(128,\) is missing",
        ),
        (
            {"layer1__0__conv9__weight": np.zeros((64, 64, 3, 3))},
            r"1 tensors have no place in resnet18 .*'layer1\.0\.conv9\.weight'",
        ),
        ({"fc__num_batches_tracked": np.zeros(())}, r"no place .*'fc\.num_batches_tracked'"),
        (
            {"layer3__1__conv2__weight": np.zeros((256, 256, 1, 1))},
            r"'layer3\.1\.conv2\.weight' has shape \(256, 256, 1, 1\).* needs \(256, 256, 3, 3\)",
        ),
    ],
    ids=["missing", "extra", "stray-num_batches_tracked", "misshaped"],
)
def test_a_wrong_tensor_is_named(resnet18_state, changes, message):
    with pytest.raises(UserError, match=message):
        from_torchvision("resnet18", _with(resnet18_state, **changes))


def test_wrong_options_are_named(resnet18_state):
    with pytest.raises(UserError, match=r"'fc\.\w+' has shape \(1000.*num_classes=10.* needs \(10"):
        from_torchvision("resnet18", resnet18_state, num_classes=10)
    with pytest.raises(UserError, match="aux_logits applies to googlenet only"):
        from_torchvision("resnet18", resnet18_state, aux_logits=True)
    with pytest.raises(UserError, match="model='lenet5' has no torchvision converter"):
        from_torchvision("lenet5", resnet18_state)
    with pytest.raises(UserError, match=r"'classifier\.1\.weight' .*missing.* squeezenet1_1"):
        from_torchvision("squeezenet1_1", resnet18_state)


def test_num_classes_comes_from_the_checkpoint(resnet18_state):
    state = _with(resnet18_state, fc__weight=np.ones((10, 512)), fc__bias=np.ones(10))
    result = convert("resnet18", state)
    assert result.model_kwargs == {"num_classes": 10}
    assert result.variables["params"]["fc"]["kernel"].shape == (512, 10)
    # 20 BatchNorms, each with one num_batches_tracked, are the only tensors left out.
    assert len(result.dropped) == 20 and all(
        t.endswith("num_batches_tracked") for t in result.dropped
    )


def test_data_parallel_prefix_and_densenet_legacy_names(torch, resnet18_state):
    """'module.' (nn.DataParallel) is stripped; torchvision's published DenseNet files
    spell 'norm1' as 'norm.1', which torchvision itself renames on load."""
    import torchvision

    plain = from_torchvision("resnet18", resnet18_state)
    wrapped = from_torchvision("resnet18", {f"module.{k}": v for k, v in resnet18_state.items()})
    jax.tree.map(np.testing.assert_array_equal, wrapped, plain)

    state = torchvision.models.densenet121().state_dict()
    legacy = {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in state.items()
    }
    assert "features.denseblock1.denselayer1.norm.1.running_var" in legacy
    jax.tree.map(
        np.testing.assert_array_equal,
        from_torchvision("densenet121", legacy),
        from_torchvision("densenet121", state),
    )


def test_googlenet_aux_heads_follow_the_checkpoint(torch):
    import torchvision

    state = torchvision.models.googlenet(aux_logits=True, init_weights=False).state_dict()
    with_aux = convert("googlenet", state)
    assert with_aux.model_kwargs["aux_logits"] and "aux2" in with_aux.variables["params"]
    without = convert("googlenet", state, aux_logits=False)  # asked: heads left out, listed
    assert "aux1" not in without.variables["params"]
    assert "aux1.fc1.weight" in without.dropped
    no_aux_state = {k: v for k, v in state.items() if not k.startswith("aux")}
    with pytest.raises(UserError, match=r"'aux1\.conv\.bn\.running_mean' .* is missing"):
        from_torchvision("googlenet", no_aux_state, aux_logits=True)


def test_cli_writes_a_checkpoint_that_loads_back(torch, resnet18_state, tmp_path):
    """.pth in-process; .safetensors in a process where torch cannot be imported."""
    from safetensors.numpy import save_file

    pth, st = tmp_path / "r18.pth", tmp_path / "r18.safetensors"
    torch.save({k: torch.from_numpy(v) for k, v in resnet18_state.items()}, pth)
    save_file(resnet18_state, str(st))
    assert cli.main(["--model=resnet18", f"--weights={pth}", f"--out={tmp_path / 'a'}"]) == 0
    code = (
        "import sys; sys.modules['torch'] = None\n"  # `import torch` now fails
        "from cnn_arch.convert.__main__ import main\n"
        f"sys.exit(main(['--model=resnet18', '--weights={st}', '--out={tmp_path / 'b'}']))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "resnet18 (num_classes=1000) from r18.safetensors: 11,689,512 params, 9,600 batch_" in (
        run.stdout
    )

    expected = from_torchvision("resnet18", resnet18_state)
    for out, source in (("a", pth), ("b", st)):
        jax.tree.map(np.testing.assert_array_equal, load_converted(tmp_path / out), expected)
        record = provenance(tmp_path / out)
        assert record["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert record["model"] == "resnet18" and record["model_kwargs"] == {"num_classes": 1000}
        assert record["counts"] == {"params": 11_689_512, "batch_stats": 9_600}
        assert len(record["dropped"]["tensors"]) == 20


def test_cli_recognizes_published_weights(torch, resnet18_state, tmp_path, monkeypatch, capsys):
    """A file whose sha256 starts with a published file's prefix is named in the record,
    with its documented top-1 and eval resize, and refused for another model."""
    from cnn_arch.convert import published

    weights = tmp_path / "w.pth"
    torch.save({k: torch.from_numpy(v) for k, v in resnet18_state.items()}, weights)
    prefix = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    fake = published.Published("resnet18", "ResNet18_Weights.TEST", 232, 12.5, 25.0)
    monkeypatch.setitem(published.PUBLISHED, prefix, fake)
    assert cli.main(["--model=resnet34", f"--weights={weights}", f"--out={tmp_path / 'x'}"]) == 2
    assert "is torchvision's ResNet18_Weights.TEST, not resnet34" in capsys.readouterr().err
    assert cli.main(["--model=resnet18", f"--weights={weights}", f"--out={tmp_path / 'y'}"]) == 0
    assert "from ResNet18_Weights.TEST (top-1 12.5%)" in capsys.readouterr().out
    record = provenance(tmp_path / "y")
    assert record["torchvision_weights"]["top1"] == 12.5
    assert record["preprocessing"]["resize"] == 232
    assert published.identify("0676ba61" + "0" * 56).weights == "ResNet50_Weights.IMAGENET1K_V1"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model=vgg7", "--weights=W", "--out=O"], "--model='vgg7' is not one of"),
        (["--model=resnet18", "--weights=/no/such.pth", "--out=O"], "does not exist"),
        (["--model=resnet18", "--weights=W", "--out=O", "--num_classes=7"], "needs (7,)"),
        (["--model=resnet18", "--weights=JUNK", "--out=O"], "is not a readable PyTorch file"),
        (["--model=resnet18", "--weights=W", "--out=FULL"], "exists and is not empty"),
        (["--model=resnet18", "--out=O"], "required: --weights"),
        (["--model=googlenet", "--weights=W", "--out=O", "--aux_logits=maybe"], "invalid choice"),
    ],
    ids=["model", "no-file", "num_classes", "junk-file", "out-exists", "no-flag", "bad-choice"],
)
def test_cli_bad_input_is_one_error_line(torch, resnet18_state, tmp_path, capsys, args, message):
    weights, junk, full = tmp_path / "w.pth", tmp_path / "junk.pth", tmp_path / "full"
    torch.save({k: torch.from_numpy(v) for k, v in resnet18_state.items()}, weights)
    junk.write_bytes(b"not a checkpoint")
    full.mkdir()
    (full / "x").write_text("x")
    subs = {"W": weights, "JUNK": junk, "FULL": full, "O": tmp_path / "new"}
    args = [a.split("=")[0] + "=" + str(subs.get(a.split("=")[1], a.split("=")[1])) for a in args]
    try:
        code = cli.main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "new").exists()


@pytest.fixture(scope="module", autouse=True)
def _release_memory():
    """The last converted model and ~40 compiled networks are not needed after this file."""
    yield
    _CONVERTED.clear()
    jax.clear_caches()
