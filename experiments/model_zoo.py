"""The model zoo in one table: exact parameters and multiply-adds of every registered model
next to the published reference figures.

For each model of ``cnn_arch.models.names()`` at its registered default classes and its
reference input size (``spec(name).input_shape``, batch 1, inference mode):

- parameters: exact, from ``jax.eval_shape`` of ``init`` (nothing is allocated);
- MACs (XLA): ``jax.jit(forward).lower(...).cost_analysis()['flops'] / 2`` of the lowered
  (not yet optimized) HLO. XLA's count skips the taps that fall on zero padding and adds
  the elementwise work (BN, ReLU, pooling), so for nets of 'SAME'-padded 3x3 convs it
  lands a few percent below the usual convention;
- MACs (conv+dense): the usual convention (every kernel tap at every output position,
  convolutions and matrix products only, as torchvision's GFLOPS and the papers count),
  summed over the ``conv_general_dilated`` / ``dot_general`` ops of the forward's jaxpr
  by the library's counter ``cnn_arch.models.cost``;
- the reference figures: torchvision's documented ``num_params`` and GFLOPS where it has
  the model, otherwise a reference implementation's exact count or the paper's figure
  (source cited in the last column). ``d params`` must be 0 wherever the reference count
  is exact; it is 'n/a' where only a rounded paper figure or nothing exists.

    python experiments/model_zoo.py                      # all models -> results/model_zoo.md
    python experiments/model_zoo.py --models resnet50,vgg16   # quick look, prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import _runs  # noqa: E402

from cnn_arch import models  # noqa: E402
from cnn_arch.models import cost  # noqa: E402

OUT = ROOT / "experiments" / "results" / "model_zoo.md"


@dataclasses.dataclass(frozen=True)
class Ref:
    """Published figures for one model. ``params`` is an exact count when ``exact``, else
    the paper's rounded figure; ``gmacs`` in 10^9 multiply-adds; ``source`` cites both."""

    params: float | None = None
    exact: bool = True
    gmacs: float | None = None
    source: str = ""
    note: str = ""  # why ours differs from the reference's figures, printed under the table


def _tv(params: int, gflops: float) -> Ref:
    return Ref(params, True, gflops, "torchvision weights meta (num_params, GFLOPS)")


def _akamaster(params: int, paper: str) -> Ref:
    return Ref(
        params, True, None, f"akamaster/pytorch_resnet_cifar10; He et al. 2016 Table 6: {paper}"
    )


def _plain_cifar(params: int, depth: int) -> Ref:
    return Ref(params, True, None, f"derived: = resnet{depth} (option-A shortcuts add none)")


# Where the reference is a derived count (marked "derived"), the sum is written out in the
# model's docstring or tests/test_models_*.py; the paper's own rounded figure is cited too.
REFERENCES: dict[str, Ref] = {
    # torchvision (models/*.py weight metadata; GFLOPS there are multiply-adds)
    "alexnet": _tv(61_100_840, 0.714),
    "vgg11": _tv(132_863_336, 7.609),
    "vgg11_bn": _tv(132_868_840, 7.609),
    "vgg13": _tv(133_047_848, 11.308),
    "vgg13_bn": _tv(133_053_736, 11.308),
    "vgg16": _tv(138_357_544, 15.47),
    "vgg16_bn": _tv(138_365_992, 15.47),
    "vgg19": _tv(143_667_240, 19.632),
    "vgg19_bn": _tv(143_678_248, 19.632),
    "resnet18": _tv(11_689_512, 1.814),
    "resnet34": _tv(21_797_672, 3.664),
    "resnet50": _tv(25_557_032, 4.089),
    "resnet101": _tv(44_549_160, 7.801),
    "resnet152": _tv(60_192_808, 11.514),
    "resnext50_32x4d": _tv(25_028_904, 4.23),
    "resnext101_32x8d": _tv(88_791_336, 16.414),
    "wide_resnet50_2": _tv(68_883_240, 11.398),
    "wide_resnet101_2": _tv(126_886_696, 22.753),
    "densenet121": _tv(7_978_856, 2.834),
    "densenet161": _tv(28_681_000, 7.728),
    "densenet169": _tv(14_149_480, 3.36),
    "densenet201": _tv(20_013_928, 4.291),
    "googlenet": _tv(6_624_904, 1.498),
    "squeezenet1_0": _tv(1_248_424, 0.819),
    "squeezenet1_1": _tv(1_235_496, 0.349),
    "shufflenet_v2_x0_5": _tv(1_366_792, 0.04),
    "shufflenet_v2_x1_0": _tv(2_278_604, 0.145),
    "shufflenet_v2_x1_5": _tv(3_503_624, 0.296),
    "shufflenet_v2_x2_0": _tv(7_393_996, 0.583),
    # papers and reference implementations
    "alexnet_paper": Ref(
        60_965_224, True, None, "derived from Krizhevsky et al. 2012 Fig. 2 (paper: '60 million')"
    ),
    "inception_v1": Ref(
        6_998_552,
        True,
        1.5,
        "derived from Szegedy et al. 2014 Table 1 (+biases); '1.5 billion multiply-adds' Sec. 5",
        note="Table 1's ops column sums to 1.50 G but lists 34M for the 7x7/2 stem conv, "
        "which takes 118M multiply-adds (112x112x64 outputs x 7x7x3 taps); with that row "
        "corrected the table sums to 1.59 G",
    ),
    "bn_inception": Ref(
        11_278_528,
        True,
        2.03,
        "derived from Ioffe & Szegedy 2015 Fig. 5; Hu et al. (SE-Net) Table 2",
        note="the SE paper measured the released Caffe BN-Inception, whose stem is a plain "
        "7x7 conv (118M multiply-adds) instead of the Appendix's separable one (34M): "
        "`separable_stem=False` gives 2.033 G. Parameters: the BN paper's Appendix says 13.6M; "
        "no variant of Fig. 5 reaches it (plain stem +6,696, biases instead of BN -10,016, "
        "5x5 instead of double 3x3 +953,216, GoogLeNet's two aux heads +6,398,416, nearest "
        "subset 0.88M away; see `bn_inception.py`)",
    ),
    "lenet5": Ref(61_706, True, None, "d2l.ai LeNet (same layers, 61,706)"),
    "lenet5_1998": Ref(
        60_000,
        True,
        340_908e-9,
        "LeCun et al. 1998 Sec. II.B: 60,000 params, 340,908 connections",
        note="C3 runs as a dense 6->16 conv with 36 of its 96 kernels held at zero (240,000 "
        "MACs where Table I's 60 kernels need 150,000); the paper's connections also count "
        "biases and the S2/S4 subsampling",
    ),
    "mlp": Ref(None, source="Ioffe & Szegedy 2015 Sec. 4.1 gives no count"),
    "mobilenet_v1": Ref(
        4_231_976,
        True,
        0.569,
        "Keras MobileNet (4,253,864 less 21,888 BN statistics); Howard et al. 2017 Table 8",
    ),
    "se_resnet50": Ref(
        28_088_024, True, 3.87, "Cadene pretrainedmodels; Hu et al. (SE-Net) Table 2"
    ),
    "se_resnet101": Ref(
        49_326_872, True, 7.60, "Cadene pretrainedmodels; Hu et al. (SE-Net) Table 2"
    ),
    "se_resnet152": Ref(
        66_821_848, True, 11.32, "Cadene pretrainedmodels; Hu et al. (SE-Net) Table 2"
    ),
    "se_resnext50_32x4d": Ref(
        27_559_896, True, 4.25, "Cadene pretrainedmodels; Hu et al. (SE-Net) Table 2"
    ),
    "plain18": Ref(
        11_689_512 - 173_824,
        True,
        1.8,
        "derived: torchvision resnet18 less 3 projections; He et al. 2016 Table 1: 1.8 GFLOPs",
        note="He et al. give one rounded figure per depth for the plain and residual nets",
    ),
    "plain34": Ref(
        21_797_672 - 173_824,
        True,
        3.6,
        "derived: torchvision resnet34 less 3 projections; He et al. 2016 Table 1: 3.6 GFLOPs",
        note="He et al. give one rounded figure per depth for the plain and residual nets",
    ),
    "preact_resnet18": Ref(None, source="no published count"),
    "resnet20": _akamaster(269_722, "0.27M"),
    "resnet32": _akamaster(464_154, "0.46M"),
    "resnet44": _akamaster(658_586, "0.66M"),
    "resnet56": _akamaster(853_018, "0.85M"),
    "resnet110": _akamaster(1_727_962, "1.7M"),
    "resnet1202": Ref(
        19_421_274,
        True,
        None,
        "derived: 6n+2 with n=200 (sum in tests/test_models_resnet_densenet.py); "
        "He et al. 2016 Table 6: 19.4M",
    ),
    "plain20": _plain_cifar(269_722, 20),
    "plain32": _plain_cifar(464_154, 32),
    "plain44": _plain_cifar(658_586, 44),
    "plain56": _plain_cifar(853_018, 56),
    "plain110": _plain_cifar(1_727_962, 110),
    "preact_resnet110": Ref(1.7e6, False, None, "He et al. 2016b (Identity Mappings) Table 3"),
    "preact_resnet164": Ref(1.7e6, False, None, "He et al. 2016b (Identity Mappings) Table 3"),
    "wrn28_10": Ref(
        36_479_194, True, None, "xternalz/WideResNet-pytorch; Zagoruyko & Komodakis 2016: 36.5M"
    ),
    "densenet_bc100": Ref(
        769_162, True, None, "bamos/densenet.pytorch; Huang et al. 2017 Table 2: 0.8M"
    ),
    "unet": Ref(None, source="Ronneberger et al. 2015 give no count"),
    "unet_padded": Ref(None, source="no published count (SAME-padded variant)"),
}


@dataclasses.dataclass
class Row:
    name: str
    input_shape: tuple[int, int, int]
    params: int
    xla_gmacs: float
    conv_gmacs: float


def measure(name: str) -> Row:
    """Parameters and multiply-adds of ``name`` at its reference input, batch 1."""
    spec = models.spec(name)
    model = models.create(name)
    x = jax.ShapeDtypeStruct((1, *spec.input_shape), jnp.float32)
    variables = cost.abstract_variables(model, spec.input_shape)

    def forward(variables, x):
        return model.apply(variables, x, train=False)

    xla = jax.jit(forward).lower(variables, x).cost_analysis()
    xla = xla[0] if isinstance(xla, list | tuple) else xla
    macs = sum(t.macs for t in cost.function_mac_terms(forward, variables, x))
    return Row(
        name, spec.input_shape, cost.param_count(variables), xla["flops"] / 2 / 1e9, macs / 1e9
    )


def _fmt_params(ref: Ref) -> str:
    if ref.params is None:
        return "n/a"
    if ref.exact:
        return f"{int(ref.params):,}"
    return f"{ref.params / 1e6:.1f}M"


def _fmt_g(g: float | None) -> str:
    if g is None:
        return "n/a"
    return f"{g:.3f}" if g >= 0.01 else f"{g:.2e}"


def _delta(row: Row, ref: Ref) -> str:
    if ref.params is None or not ref.exact:
        return "n/a"
    return f"{row.params - int(ref.params):+,}".replace("+0", "0")


def _ratio(value: float, ref: Ref) -> str:
    return "n/a" if ref.gmacs is None else f"{value / ref.gmacs:.3f}"


HEADER = (
    "| model | input (HxWxC) | params | ref params | d params | GMACs (XLA flops/2, lowered HLO) "
    "| GMACs (conv+dense) | ref GMACs | XLA / ref | conv+dense / ref | reference source |"
)


def table(rows: list[Row]) -> str:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for r in rows:
        ref = REFERENCES.get(r.name, Ref(None, source="no reference recorded"))
        h, w, c = r.input_shape
        lines.append(
            f"| {r.name} | {h}x{w}x{c} | {r.params:,} | {_fmt_params(ref)} | {_delta(r, ref)} "
            f"| {_fmt_g(r.xla_gmacs)} | {_fmt_g(r.conv_gmacs)} | {_fmt_g(ref.gmacs)} "
            f"| {_ratio(r.xla_gmacs, ref)} | {_ratio(r.conv_gmacs, ref)} | {ref.source} |"
        )
    return "\n".join(lines)


def mismatched(rows: list[Row]) -> list[str]:
    """Models whose parameter count differs from an exact reference count."""
    return [
        r.name
        for r in rows
        if (ref := REFERENCES.get(r.name)) and ref.exact and ref.params is not None
        if r.params != int(ref.params)
    ]


def report(rows: list[Row]) -> str:
    wrong = mismatched(rows)
    by_name = {r.name: r for r in rows}
    notes = [
        "# Model zoo: parameters and multiply-adds",
        "",
        "Generated by `python experiments/model_zoo.py` (jax "
        f"{jax.__version__}, {jax.devices()[0].platform}). Every registered model at its "
        "registered default classes (1000 ImageNet, 10 CIFAR/MNIST, 2 U-Net) and its "
        "reference input (`models.spec(name).input_shape`), batch 1, inference mode.",
        "",
        "- **params**: exact, `jax.eval_shape` of `init` (the `params` collection; BN running "
        "statistics are not parameters, as in torchvision's `num_params`).",
        "- **GMACs (XLA flops/2)**: `jax.jit(forward).lower(...).cost_analysis()['flops'] / 2` "
        "of the lowered, not yet optimized HLO. XLA counts only the kernel taps that land on "
        "real (not zero-padded) input and adds the elementwise work (BN, ReLU, pooling), so "
        "for nets of padded 3x3 convs it is a few percent below the convention used by the "
        "references; for un-padded nets it is slightly above.",
        "- **GMACs (conv+dense)**: the references' convention: every kernel tap at every "
        "output position of each `conv_general_dilated` / `dot_general` in the forward's "
        "jaxpr.",
        "- **ref**: torchvision's documented `num_params` and GFLOPS (which are multiply-adds: "
        "4.089 for ResNet-50) where torchvision has the model; otherwise a reference "
        "implementation's exact count or the paper's figure, cited in the last column. "
        "'derived' counts are the sum of the paper's layer table, written out in the model's "
        "docstring or tests. **d params** is ours minus the reference where that is exact; "
        "'n/a' where only a rounded paper figure or nothing exists.",
        "- The SE paper's and the ResNet paper's figures are for ResNet v1 (stride in the "
        "first 1x1); torchvision's ResNets are v1.5 (stride in the 3x3), hence 4.09 vs 3.86.",
        "",
    ]
    if "resnet50" in by_name:
        r = by_name["resnet50"]
        notes += [
            f"Check of flops/2 as a MAC estimate: ResNet-50 gives {r.xla_gmacs:.3f} GMACs from "
            f"XLA and {r.conv_gmacs:.3f} by the convention, against torchvision's 4.089 "
            f"({100 * (r.xla_gmacs / 4.089 - 1):+.1f}% and "
            f"{100 * (r.conv_gmacs / 4.089 - 1):+.1f}%).",
            "",
        ]
    notes.append(
        "Parameter counts that differ from an exact reference: "
        + (", ".join(wrong) if wrong else "none")
        + "."
    )
    explained = [
        f"- {r.name}: {REFERENCES[r.name].note}."
        for r in rows
        if r.name in REFERENCES and REFERENCES[r.name].note
    ]
    tail = "\n\nWhere ours differs from the reference, and why:\n\n" + "\n".join(explained)
    return "\n".join(notes) + "\n\n" + table(rows) + (tail if explained else "") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated subset (default: all)")
    parser.add_argument(
        "--out", default=None, help=f"write the Markdown here (default: {OUT} for a full run)"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n] or models.names()
    unknown = sorted(set(names) - set(models.names()))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {models.names()}")

    rows = []
    for name in names:
        t0 = time.perf_counter()
        rows.append(measure(name))
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    text = report(rows)
    print(text)
    out = args.out or (OUT if not args.models else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 1 if mismatched(rows) else 0


if __name__ == "__main__":
    _runs.run_main(main)
