"""The notes' and lectures' size claims about the classic networks, measured on the zoo.

Each claim is a ratio of parameters or multiply-adds between two networks; the zoo
measures both with the library's counter (``cnn_arch.models.cost``: exact parameters,
conv + dense multiply-adds at each model's reference input, batch 1, inference) for
every variant it has, and the verdict says which variant, if any, makes the claim
true (within 20% of the claimed ratio).

    python experiments/architecture_claims.py        # -> experiments/results/

Deterministic counts: no training, no seeds (``--scale`` is accepted for the common
interface; both scales count the same networks).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import _runs  # noqa: E402

from cnn_arch import models  # noqa: E402
from cnn_arch.models import cost  # noqa: E402
from cnn_arch.models.bn_inception import MODULES  # noqa: E402

MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared"
TOLERANCE = 0.2  # a claimed ratio holds when measured / claimed is within 1 +- 20%

# (key, registry name, overrides, label)
VARIANTS = [
    ("lenet5", "lenet5", {}, "LeNet-5 (modern: ReLU, average pools)"),
    ("lenet5_1998", "lenet5_1998", {}, "LeNet-5 (1998: C3 table, RBF output)"),
    ("alexnet", "alexnet", {}, "AlexNet (torchvision, one tower)"),
    ("alexnet_paper", "alexnet_paper", {}, "AlexNet (paper, two GPUs, 227x227)"),
    ("googlenet", "googlenet", {}, "GoogLeNet (torchvision, BN, no aux heads)"),
    ("googlenet_aux", "googlenet", {"aux_logits": True}, "GoogLeNet (torchvision, aux heads)"),
    ("inception_v1", "inception_v1", {}, "GoogLeNet (paper: 5x5, no BN, no aux heads)"),
    ("inception_v1_aux", "inception_v1", {"aux_logits": True}, "GoogLeNet (paper, aux heads)"),
    ("vgg16", "vgg16", {}, "VGG-16"),
    ("bn_inception", "bn_inception", {}, "BN-Inception (Fig. 5)"),
]

# claim, source, what is compared, numerator variants, denominator variants, claimed ratio
CLAIMS = [
    ("AlexNet has about 250x the computation of LeNet-5", "lecture notes", "macs",
     ["alexnet", "alexnet_paper"], ["lenet5", "lenet5_1998"], 250.0),
    ("AlexNet has about 10x the parameters of LeNet-5", "lecture notes", "params",
     ["alexnet", "alexnet_paper"], ["lenet5", "lenet5_1998"], 10.0),
    ("GoogLeNet has 12x fewer parameters than AlexNet",
     "CSC413; Szegedy et al. 2014 Sec. 1", "params",
     ["alexnet", "alexnet_paper"],
     ["googlenet", "googlenet_aux", "inception_v1", "inception_v1_aux"], 12.0),
    ("GoogLeNet has 27x fewer parameters than VGG-16", "CSC413", "params", ["vgg16"],
     ["googlenet", "googlenet_aux", "inception_v1", "inception_v1_aux"], 27.0),
]  # fmt: skip


def measure(name: str, overrides: dict) -> dict:
    spec = models.spec(name)
    model = models.create(name, **overrides)
    return {
        "input": list(spec.input_shape),
        "params": cost.model_params(model, spec.input_shape),
        "macs": cost.model_macs(model, spec.input_shape),
    }


def double_3x3_vs_5x5() -> dict:
    """BN-Inception's double 3x3 branches against one 5x5 conv at the same widths (Fig. 5),
    by formula: parameters (weights) and multiply-adds on each module's grid (224 input:
    28x28 for 3a-3c, 14x14 for 4a-4e, 7x7 for 5a-5b; the stride-2 modules 3c and 4e put
    the stride in the second 3x3, so a 5x5 there runs on the output grid)."""
    grids = {"3": 28, "4": 14, "5": 7}
    double = {"params": 0, "macs": 0}
    single = {"params": 0, "macs": 0}
    for name, _, _, _, d3r, d3, _, _, stride in MODULES:
        g_in = grids[name[0]]
        g_out = g_in // stride
        double["params"] += 9 * d3r * d3 + 9 * d3 * d3
        double["macs"] += g_in * g_in * 9 * d3r * d3 + g_out * g_out * 9 * d3 * d3
        single["params"] += 25 * d3r * d3
        single["macs"] += g_out * g_out * 25 * d3r * d3
    return {"double_3x3": double, "single_5x5": single}


def run() -> dict:
    measured = {key: measure(name, kw) | {"label": label} for key, name, kw, label in VARIANTS}
    claims = []
    for text, source, what, nums, dens, claimed in CLAIMS:
        pairs = []
        for a in nums:
            for b in dens:
                ratio = measured[a][what] / measured[b][what]
                holds = abs(ratio / claimed - 1) <= TOLERANCE
                pairs.append({"num": a, "den": b, "ratio": ratio, "holds": holds})
        claims.append({"claim": text, "source": source, "measure": what, "claimed": claimed,
                       "pairs": pairs})  # fmt: skip
    branch = double_3x3_vs_5x5()
    bn, v1 = measured["bn_inception"], measured["inception_v1"]
    bn_claim = {
        "claim": "BN-Inception's two 3x3 convs instead of 5x5: +25% parameters, +30% computation",
        "source": "Ioffe & Szegedy 2015, Appendix",
        "whole_network_vs_googlenet": {
            "params": bn["params"] / v1["params"] - 1,
            "macs": bn["macs"] / v1["macs"] - 1,
        },
        "branches_same_widths": {
            "params": branch["double_3x3"]["params"] / branch["single_5x5"]["params"] - 1,
            "macs": branch["double_3x3"]["macs"] / branch["single_5x5"]["macs"] - 1,
            **branch,
        },
    }
    return {"models": measured, "claims": claims, "bn_inception": bn_claim}


def _ratio_cell(p: dict) -> str:
    return f"{p['num']} / {p['den']}: {p['ratio']:,.1f}x{' (holds)' if p['holds'] else ''}"


def report(r: dict, command: str, wall: float) -> str:
    lines = [
        "# Size claims about the classic networks, measured on the zoo",
        "",
        f"Command: `{command}`; wall time {wall:.1f} s; machine: {MACHINE}; jax "
        f"{jax.__version__}, Python {platform.python_version()}. Exact counts, no seeds. "
        "Parameters: the `params` collection; multiply-adds: convs and matrix products at the "
        "model's reference input (`cnn_arch.models.cost`). A claimed ratio holds when the "
        f"measured one is within {TOLERANCE:.0%} of it.",
        "",
        "| network | input | parameters | multiply-adds |",
        "|---|---|---|---|",
    ]
    for m in r["models"].values():
        h, w, c = m["input"]
        lines.append(f"| {m['label']} | {h}x{w}x{c} | {m['params']:,} | {m['macs']:,} |")
    lines += ["", "| claim | source | claimed | measured (every variant pair) | verdict |",
              "|---|---|---|---|---|"]  # fmt: skip
    for c in r["claims"]:
        ok = [p for p in c["pairs"] if p["holds"]]
        verdict = (
            "holds for " + ", ".join(f"{p['num']} / {p['den']}" for p in ok)
            if ok
            else "no variant pair makes it true"
        )
        cells = "; ".join(_ratio_cell(p) for p in c["pairs"])
        lines.append(f"| {c['claim']} | {c['source']} | {c['claimed']:g}x | {cells} | {verdict} |")
    b = r["bn_inception"]
    whole, same = b["whole_network_vs_googlenet"], b["branches_same_widths"]

    def bn_verdict(reading: dict) -> list[str]:
        return [
            f"{what} ({claimed:+.0%})"
            for what, claimed in (("params", 0.25), ("macs", 0.30))
            if abs((1 + reading[what]) / (1 + claimed) - 1) <= TOLERANCE
        ]

    held = {"whole network": bn_verdict(whole), "same-width branches": bn_verdict(same)}
    verdict = "; ".join(f"{k}: {', '.join(v)} holds" for k, v in held.items() if v) or "neither"
    models_ = r["models"]
    lines += [
        f"| {b['claim']} | {b['source']} | +25% / +30% | whole network vs GoogLeNet (paper "
        f"form): {whole['params']:+.0%} parameters, {whole['macs']:+.0%} multiply-adds; the "
        f"double-3x3 branches vs one 5x5 at Fig. 5's widths: {same['params']:+.0%} / "
        f"{same['macs']:+.0%} | {verdict} |",
        "",
        "Which LeNet and AlexNet would make the notes' claims true: the rows above cover all "
        "four pairs, and AlexNet has "
        f"{min(p['ratio'] for p in r['claims'][1]['pairs']):,.0f}x to "
        f"{max(p['ratio'] for p in r['claims'][1]['pairs']):,.0f}x LeNet-5's parameters and "
        f"{min(p['ratio'] for p in r['claims'][0]['pairs']):,.0f}x to "
        f"{max(p['ratio'] for p in r['claims'][0]['pairs']):,.0f}x its multiply-adds whichever "
        "two are compared, so none does. GoogLeNet's '12x' and '27x' need about "
        f"{models_['alexnet']['params'] / 12 / 1e6:.1f}M and "
        f"{models_['vgg16']['params'] / 27 / 1e6:.1f}M parameters; the paper's GoogLeNet "
        f"without its auxiliary heads has {models_['inception_v1']['params'] / 1e6:.2f}M here "
        f"(biases included), torchvision's {models_['googlenet']['params'] / 1e6:.2f}M.",
    ]
    return "\n".join(lines) + "\n"


def figure(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    labels, claimed, lo, hi = [], [], [], []
    for c in r["claims"]:
        ratios = [p["ratio"] for p in c["pairs"]]
        labels.append(c["claim"].replace(" has ", "\n"))
        claimed.append(c["claimed"])
        lo.append(min(ratios))
        hi.append(max(ratios))
    xs = range(len(labels))
    ax.scatter(xs, claimed, marker="o", s=60, label="claimed", zorder=3)
    ax.vlines(xs, lo, hi, color="C1", linewidth=6, alpha=0.6, label="measured (variant range)")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("ratio")
    ax.set_title("Size claims vs the zoo's counts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument("--scale", choices=("full", "short"), default="full")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result = run()
    wall = time.perf_counter() - t0
    command = "python experiments/architecture_claims.py"
    result["meta"] = {"command": command, "wall_s": wall, "machine": MACHINE,
                      "jax": jax.__version__}  # fmt: skip
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "architecture_claims.json").write_text(json.dumps(result, indent=1) + "\n")
    text = report(result, command, wall)
    (out / "architecture_claims.md").write_text(text)
    figure(result, out / "architecture_claims.png")
    print(text)
    return 0


if __name__ == "__main__":
    _runs.run_main(main)
