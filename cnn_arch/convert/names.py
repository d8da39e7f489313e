"""Where each cnn_arch module's tensors live in a torchvision ``state_dict``.

One small rule set per family turns a module path of our parameter tree
(``layer2_0/downsample_conv``) into the prefix of the torchvision module holding the
same tensors (``layer2.0.downsample.0``). The converter walks *our* tree and asks
these rules, so every parameter we need is looked up by name and every torchvision
tensor left over is reported: nothing is matched by position or silently dropped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from cnn_arch.models import squeezenet, vgg


@dataclasses.dataclass(frozen=True)
class Family:
    """How one torchvision family names its modules."""

    torch_prefix: Callable[[str, str], str]  # (model name, our module path) -> torch prefix
    head: str  # torch prefix of the classifier: its weight's rows are the classes
    # Our Dense layers whose input is a flattened (C, H, W) torch map; we flatten (H, W, C).
    flatten_chw: dict[str, tuple[int, int, int]] = dataclasses.field(default_factory=dict)
    # Old torchvision key spellings still found in published checkpoints -> current ones.
    legacy_keys: tuple[tuple[str, str], ...] = ()


def _rules(*pairs: tuple[str, str]) -> Callable[[str, str], str]:
    """The first regex that fully matches the path rewrites it; unmatched paths stay."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in pairs]

    def prefix(_: str, path: str) -> str:
        for pattern, replacement in compiled:
            if pattern.fullmatch(path):
                return pattern.sub(replacement, path)
        return path

    return prefix


def _vgg_prefix(model: str, path: str) -> str:
    """torchvision's ``features`` is one Sequential: conv, [BN], ReLU per width, and a
    max pool per 'M'; our convs are named by stage and position (conv3_2)."""
    cfg = vgg.CFGS[{"11": "A", "13": "B", "16": "D", "19": "E"}[model[3:5]]]
    per_conv = 3 if model.endswith("_bn") else 2
    index, stage, i = 0, 1, 1
    where = {}
    for v in cfg:
        if v == "M":
            index, stage, i = index + 1, stage + 1, 1
            continue
        where[f"conv{stage}_{i}"] = f"features.{index}"
        where[f"conv{stage}_{i}_norm"] = f"features.{index + 1}"
        index, i = index + per_conv, i + 1
    where.update(fc1="classifier.0", fc2="classifier.3", head="classifier.6")
    return where.get(path, path)


def _squeezenet_prefix(model: str, path: str) -> str:
    """features: conv1, ReLU, max pool, then one index per fire module or pool."""
    _, layers = squeezenet.CFGS[model.removeprefix("squeezenet")]
    where = {"conv1/conv": "features.0", "conv10": "classifier.1"}
    fire = 2
    for index, v in enumerate(layers, start=3):
        if v != "M":
            for part in ("squeeze", "expand1x1", "expand3x3"):
                where[f"fire{fire}_{part}/conv"] = f"features.{index}.{part}"
            fire += 1
    return where.get(path, path)


def _shufflenet_prefix(_: str, path: str) -> str:
    # Sequential indices inside torchvision's branches (ReLUs take the missing ones).
    parts = {"b1_dw": "branch1.0", "b1_pw": "branch1.2", "b2_pw1": "branch2.0"}
    parts |= {"b2_dw": "branch2.3", "b2_pw2": "branch2.5"}
    m = re.fullmatch(r"(conv1|conv5)(_norm)?", path)
    if m:
        return f"{m[1]}.{1 if m[2] else 0}"
    m = re.fullmatch(r"stage(\d)_unit(\d+)_(\w+?)(_norm)?", path)
    if m:
        seq, index = parts[m[3]].split(".")
        return f"stage{m[1]}.{int(m[2]) - 1}.{seq}.{int(index) + (1 if m[4] else 0)}"
    return {"head": "fc"}.get(path, path)


RESNET = Family(
    _rules(
        (r"layer(\d)_(\d+)/downsample_conv", r"layer\1.\2.downsample.0"),
        (r"layer(\d)_(\d+)/downsample_bn", r"layer\1.\2.downsample.1"),
        (r"layer(\d)_(\d+)/(\w+)", r"layer\1.\2.\3"),
    ),
    head="fc",
)
DENSENET = Family(
    _rules(
        (r"(conv0|norm0|norm5)", r"features.\1"),
        (r"denseblock(\d)_layer(\d+)/(\w+)", r"features.denseblock\1.denselayer\2.\3"),
        (r"transition(\d)_(norm|conv)", r"features.transition\1.\2"),
    ),
    head="classifier",
    # torchvision's published DenseNet files predate its current names ('norm.1'
    # for 'norm1'); torchvision renames them on load with this same pattern.
    legacy_keys=(
        (
            r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean"
            r"|running_var|num_batches_tracked))$",
            r"\1\2",
        ),
    ),
)


def _googlenet_prefix(_: str, path: str) -> str:
    """Each of our ConvUnits (conv, norm) is a torchvision BasicConv2d (conv, bn); the
    3x3 and '5x5' branches are Sequentials counted from 0, the pool branch's conv is
    branch4.1 (after its max pool)."""
    path = re.sub(r"/norm$", "/bn", path)
    path = re.sub(r"/branch1_1/", ".branch1.", path)
    path = re.sub(r"/branch([23])_([12])/", lambda m: f".branch{m[1]}.{int(m[2]) - 1}.", path)
    path = re.sub(r"/pool_proj/", ".branch4.1.", path)
    return {"head": "fc"}.get(path, path)


GOOGLENET = Family(
    _googlenet_prefix,
    head="fc",
    flatten_chw={"aux1/fc1": (128, 4, 4), "aux2/fc1": (128, 4, 4)},
)
ALEXNET = Family(
    _rules(
        *((f"conv{i + 1}", f"features.{j}") for i, j in enumerate((0, 3, 6, 8, 10))),
        ("fc1", "classifier.1"),
        ("fc2", "classifier.4"),
        ("head", "classifier.6"),
    ),
    head="classifier.6",
    flatten_chw={"fc1": (256, 6, 6)},
)
VGG = Family(_vgg_prefix, head="classifier.6", flatten_chw={"fc1": (512, 7, 7)})
SQUEEZENET = Family(_squeezenet_prefix, head="classifier.1")
SHUFFLENET = Family(_shufflenet_prefix, head="fc")

FAMILIES: dict[str, Family] = {"alexnet": ALEXNET, "googlenet": GOOGLENET}
FAMILIES |= {f"vgg{d}{bn}": VGG for d in (11, 13, 16, 19) for bn in ("", "_bn")}
FAMILIES |= {f"resnet{d}": RESNET for d in (18, 34, 50, 101, 152)}
FAMILIES |= dict.fromkeys(
    ("resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"), RESNET
)
FAMILIES |= {f"densenet{d}": DENSENET for d in (121, 161, 169, 201)}
FAMILIES |= {f"squeezenet1_{v}": SQUEEZENET for v in (0, 1)}
FAMILIES |= {f"shufflenet_v2_x{w}": SHUFFLENET for w in ("0_5", "1_0", "1_5", "2_0")}


def torch_module(model: str, path: str) -> str:
    """The torchvision module prefix (dots) holding our module ``path`` ('/'-joined)."""
    return FAMILIES[model].torch_prefix(model, path).replace("/", ".")
