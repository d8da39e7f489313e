"""The cost of an Inception module, counted by the library: which of the lecture figures hold.

Two sources, both checked against ``cnn_arch.models.cost`` on modules built from the
library's own ``blocks.Inception`` (convs with biases, no norm; only convolutions and
matrix products are counted, every kernel tap at every output position):

1. The CSC413 slides (after CS231n 2017, Lecture 9) on a 28x28x256 input: the naive
   module (1x1/128, 3x3/192, 5x5/96 convs and a 3x3 max pool side by side, Szegedy et
   al. 2014 Fig. 2a) "854M ops"; with 1x1 reductions (Fig. 2b) "358M ops", the slide
   listing six convs: 1x1/64 and 1x1/64 (reductions), 1x1/128, 3x3/192 on 64, 5x5/96 on
   64, 1x1/64 after the pool. Each total is checked against the slide's own per-conv
   terms and the counter; GoogLeNet's module 3b (Table 1: the same input and outputs,
   reductions 128 / 32 / 64) is counted too.
2. The notes' table "Inception vs 3x3 vs 5x5" for 256 output channels: inception
   module 16,000 parameters / 128 Mega FLOPS, 3x3 conv 44,000 / 346M, 5x5 conv
   1,22,000 / 963M. Candidates are counted (GoogLeNet module 3a, whose input is
   28x28x192 and output 256 channels, and 3x3 / 5x5 convs 192 -> 256), and every
   (input channels, input size) is searched for one that reproduces a row.

    python experiments/inception_cost.py                  # -> experiments/results/
    python experiments/inception_cost.py --scale short    # smaller search (seconds)

The counts are exact integers and deterministic (no training, no seeds).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import _runs  # noqa: E402

from cnn_arch.models import blocks, cost  # noqa: E402

MACHINE = "2-core Xeon CPU (AVX-512/AMX), shared"
M = 1e6

# --- the sources' figures ------------------------------------------------------------
# (name, C_out, kernel, C_in) per conv, as the slide writes "28x28xC_out x k x k x C_in".
SLIDE_NAIVE_TERMS = [("1x1 conv, 128", 128, 1, 256), ("3x3 conv, 192", 192, 3, 256)]
SLIDE_NAIVE_TERMS += [("5x5 conv, 96", 96, 5, 256)]
SLIDE_REDUCED_TERMS = [
    ("1x1 conv, 64 (3x3 reduce)", 64, 1, 256),
    ("1x1 conv, 64 (5x5 reduce)", 64, 1, 256),
    ("1x1 conv, 128", 128, 1, 256),
    ("3x3 conv, 192", 192, 3, 64),
    ("5x5 conv, 96", 96, 5, 64),
    ("1x1 conv, 64 (pool proj)", 64, 1, 256),
]
SLIDE_TOTALS = {"naive": 854 * M, "reduced": 358 * M}
# The notes' table: (parameters, multiply-adds) as printed ("1,22,000" = 122,000).
NOTES = {
    "inception": (16_000, 128 * M),
    "conv3x3": (44_000, 346 * M),
    "conv5x5": (122_000, 963 * M),
}
NOTES_OUT = 256

# GoogLeNet Table 1 rows: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
GOOGLENET_3A = (64, 96, 128, 16, 32, 32)  # input 28x28x192, output 256
GOOGLENET_3B = (128, 128, 192, 32, 96, 64)  # input 28x28x256, output 480


def inception(c1, c3r, c3, c5r, c5, pool_proj, reduction=True) -> blocks.Inception:
    """An Inception module of the library (GoogLeNet Fig. 2), convs with biases, no norm."""
    if reduction:
        branches = (((c1, 1, 1),), ((c3r, 1, 1), (c3, 3, 1)), ((c5r, 1, 1), (c5, 5, 1)))
    else:
        branches = (((c1, 1, 1),), ((c3, 3, 1),), ((c5, 5, 1),))
    return blocks.Inception(branches, "max", 1, pool_proj if reduction else 0)


class SingleConv(blocks.ConvNormAct):
    """One k x k conv (with bias), as the notes' 3x3 / 5x5 rows."""


def count(module, shape) -> dict:
    """Parameters (with and without biases), multiply-adds and the per-conv terms."""
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    terms = cost.function_mac_terms(lambda v, x: module.apply(v, x, train=False), variables, x)
    leaves = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    weights = sum(int(a.size) for p, a in leaves if "kernel" in jax.tree_util.keystr(p))
    out = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
    return {
        "input": list(shape),
        "output": list(out.shape[1:]),
        "params": cost.param_count(variables),
        "weights": weights,
        "macs": sum(t.macs for t in terms),
        "terms": [
            {"output": list(t.output_shape[1:]), "depth": t.depth, "macs": t.macs} for t in terms
        ],
    }


def slide_terms(terms) -> list[dict]:
    return [
        {"conv": n, "expression": f"28x28x{co}x{k}x{k}x{ci}", "macs": 28 * 28 * co * k * k * ci}
        for n, co, k, ci in terms
    ]


def reduced_total(r3: int, r5: int, pp: int) -> int:
    """Multiply-adds of the slide's reduced module with reductions r3, r5 and pool proj pp."""
    return 28 * 28 * (256 * 128 + 256 * r3 + 9 * r3 * 192 + 256 * r5 + 25 * r5 * 96 + 256 * pp)


def matches(value: float, figure: float, unit: float) -> bool:
    """``value`` is what ``figure`` (printed to ``unit``) could stand for, rounded or cut."""
    return figure - unit / 2 <= value < figure + unit


def search_single_conv(kernel, params_fig, macs_fig, max_channels, max_size) -> list[dict]:
    """All (C_in, H=W, bias) for which a k x k conv to 256 channels prints as the notes'
    row: parameters to the nearest thousand and multiply-adds to the nearest million."""
    found = []
    for c_in in range(1, max_channels + 1):
        for bias in (False, True):
            params = kernel * kernel * c_in * NOTES_OUT + (NOTES_OUT if bias else 0)
            if not matches(params, params_fig, 1000):
                continue
            for size in range(1, max_size + 1):
                macs = size * size * kernel * kernel * c_in * NOTES_OUT
                if matches(macs, macs_fig, M):
                    found.append({"c_in": c_in, "size": size, "bias": bias, "params": params,
                                  "macs": macs})  # fmt: skip
    return found


def run(scale: str) -> dict:
    max_channels, max_size = (1024, 512) if scale == "full" else (256, 128)
    slide_shape, notes_shape = (28, 28, 256), (28, 28, 192)
    naive = count(inception(128, 0, 192, 0, 96, 0, reduction=False), slide_shape)
    reduced_slide = count(inception(128, 64, 192, 64, 96, 64), slide_shape)
    googlenet_3b = count(inception(*GOOGLENET_3B), slide_shape)
    naive_terms, reduced_terms = slide_terms(SLIDE_NAIVE_TERMS), slide_terms(SLIDE_REDUCED_TERMS)
    naive_sum = sum(t["macs"] for t in naive_terms)
    reduced_sum = sum(t["macs"] for t in reduced_terms)
    three_by_three = reduced_terms[3]["macs"]
    near_358 = [
        (r3, r5, pp)
        for r3 in range(8, 257, 8)
        for r5 in range(8, 257, 8)
        for pp in range(8, 257, 8)
        if matches(reduced_total(r3, r5, pp), SLIDE_TOTALS["reduced"], M)
    ]
    slide = {
        "naive": {
            "slide_total": SLIDE_TOTALS["naive"],
            "slide_terms": naive_terms,
            "slide_terms_sum": naive_sum,
            "counter": naive,
        },
        "reduced": {
            "slide_total": SLIDE_TOTALS["reduced"],
            "slide_terms": reduced_terms,
            "slide_terms_sum": reduced_sum,
            "slide_terms_sum_plus_3x3_again": reduced_sum + three_by_three,
            "counter": reduced_slide,
            "googlenet_3b": googlenet_3b,
            "reductions_near_358M": {
                "grid": "multiples of 8 up to 256",
                "count": len(near_358),
                "uniform": [t for t in near_358 if t[0] == t[1] == t[2]],
                "first": near_358[:10],
            },
        },
    }
    inception_3a = count(inception(*GOOGLENET_3A), notes_shape)
    conv3 = count(SingleConv(NOTES_OUT, 3, 1, 1), notes_shape)
    conv5 = count(SingleConv(NOTES_OUT, 5, 1, 2), notes_shape)
    # Module 3a's weights for any input width C: 208 C + 123,392 (the 3x3/5x5 convs on
    # their reductions do not depend on C), at least 123,600 > 16,000.
    c1, c3r, c3, c5r, c5, pp = GOOGLENET_3A
    fixed = 9 * c3r * c3 + 25 * c5r * c5
    notes = {
        "inception": {"notes": NOTES["inception"], "counter": inception_3a,
                      "min_weights_any_input": (c1 + c3r + c5r + pp) * 1 + fixed},
        "conv3x3": {"notes": NOTES["conv3x3"], "counter": conv3,
                    "solutions": search_single_conv(3, *NOTES["conv3x3"], max_channels, max_size)},
        "conv5x5": {"notes": NOTES["conv5x5"], "counter": conv5,
                    "solutions": search_single_conv(5, *NOTES["conv5x5"], max_channels, max_size)},
        "search": {"max_channels": max_channels, "max_size": max_size},
    }  # fmt: skip
    return {"slide": slide, "notes": notes}


def _m(x: float) -> str:
    return f"{x / M:,.1f}M"


def report(r: dict, command: str, wall: float) -> str:
    s, n = r["slide"], r["notes"]
    nv, rd = s["naive"], s["reduced"]
    lines = [
        "# Inception module cost: the lecture figures against the library's counter",
        "",
        f"Command: `{command}`; wall time {wall:.1f} s; machine: {MACHINE}; "
        f"jax {jax.__version__}, Python {platform.python_version()}. Exact integer counts; "
        "nothing is random (no seeds). Multiply-adds (MACs) = every kernel tap at every output "
        "position of each conv (`cnn_arch.models.cost`), on modules built from "
        "`cnn_arch.models.blocks.Inception`; the slides' and notes' 'ops' / 'FLOPS' are MACs.",
        "",
        "## CSC413 slides: 28x28x256 input",
        "",
        "The slide's terms are transcribed from the CS231n 2017 Lecture 9 slide that the "
        "CSC413 slides reproduce (the PDF is not available offline here).",
        "",
        "| module | slide says | slide's own terms sum to | counter | verdict |",
        "|---|---|---|---|---|",
        f"| naive (1x1/128, 3x3/192, 5x5/96, 3x3 pool) | 854M | {_m(nv['slide_terms_sum'])} "
        f"| {_m(nv['counter']['macs'])} ({nv['counter']['macs']:,}) | holds |",
        f"| with reductions (slide's six convs) | 358M | {_m(rd['slide_terms_sum'])} "
        f"| {_m(rd['counter']['macs'])} ({rd['counter']['macs']:,}) | does not hold: the six "
        f"terms sum to {_m(rd['slide_terms_sum'])} |",
        f"| GoogLeNet 3b (Table 1 reductions 128 / 32 / 64) | - | - "
        f"| {_m(rd['googlenet_3b']['macs'])} ({rd['googlenet_3b']['macs']:,}) | - |",
        "",
        "Per-conv terms of the reduced module (slide expression = counter term):",
        "",
        "| conv | slide expression | MACs |",
        "|---|---|---|",
    ]
    lines += [f"| {t['conv']} | {t['expression']} | {t['macs']:,} |" for t in rd["slide_terms"]]
    near = rd["reductions_near_358M"]
    lines += [
        "",
        f"The six terms sum to {rd['slide_terms_sum']:,} = {_m(rd['slide_terms_sum'])}, not "
        f"358M; the counter agrees term by term. Adding the 3x3 term a second time gives "
        f"{rd['slide_terms_sum_plus_3x3_again']:,} = {_m(rd['slide_terms_sum_plus_3x3_again'])}, "
        "which is the slide's 358M: most likely the 3x3 conv was counted twice. Reading the "
        f"module as GoogLeNet's 3b instead gives {_m(rd['googlenet_3b']['macs'])}, also not "
        f"358M. Of all reductions (r3, r5, pool proj) in {near['grid']}, {near['count']} give "
        f"358M, {len(near['uniform'])} of them with one common width. The slide's point "
        f"holds either way: the reductions cut the multiply-adds "
        f"{nv['counter']['macs'] / rd['counter']['macs']:.2f}x ({_m(nv['counter']['macs'])} / "
        f"{_m(rd['counter']['macs'])}), {nv['counter']['macs'] / rd['googlenet_3b']['macs']:.2f}x "
        "for 3b; the output is 28x28x480 as the slide says "
        f"(counter: {'x'.join(map(str, rd['counter']['output']))}); the naive module's output is "
        f"{'x'.join(map(str, nv['counter']['output']))} (the pool passes all 256 input channels).",
        "",
        "## The notes' table: 256 output channels",
        "",
        "| row | notes: params / MACs | counter: weights (with biases) / MACs, 28x28x192 input "
        "| params / notes | MACs verdict |",
        "|---|---|---|---|---|",
    ]
    names = {"inception": "inception module (GoogLeNet 3a)", "conv3x3": "3x3 conv 192->256",
             "conv5x5": "5x5 conv 192->256"}  # fmt: skip
    for key, label in names.items():
        row = n[key]
        (p, mac), c = row["notes"], row["counter"]
        lines.append(
            f"| {label} | {p:,} / {_m(mac)} | {c['weights']:,} ({c['params']:,}) / {_m(c['macs'])} "
            f"({c['macs']:,}) | {c['weights'] / p:.2f}x | "
            f"{'holds' if matches(c['macs'], mac, M) else 'does not hold'} |"
        )
    s3, s5 = n["conv3x3"]["solutions"], n["conv5x5"]["solutions"]
    fmt = lambda sol: ", ".join(  # noqa: E731
        f"C_in={x['c_in']} at {x['size']}x{x['size']}{' +bias' if x['bias'] else ''} "
        f"({x['params']:,} / {_m(x['macs'])})"
        for x in sol
    )
    weights = " / ".join(f"{n[k]['counter']['weights']:,}" for k in names)
    ratios = [n[k]["counter"]["weights"] / n[k]["notes"][0] for k in names]
    sizes = sorted({(x["c_in"], x["size"]) for x in s3 + s5})
    fixed = n["inception"]["min_weights_any_input"] - sum(GOOGLENET_3A[i] for i in (0, 1, 3, 5))
    lines += [
        "",
        "The multiply-adds hold for a 28x28x192 input (GoogLeNet 3a's) to 256 channels. "
        f"There the weights ({weights}) are {min(ratios):.2f}x to {max(ratios):.2f}x the "
        "notes' parameters: the table's parameter column has lost a digit. Searching every "
        f"input width C_in <= {n['search']['max_channels']} and size H=W <= "
        f"{n['search']['max_size']} for one that prints as both numbers of a row (parameters "
        "to the thousand, MACs to the million, with or without biases): "
        f"3x3: {fmt(s3) or 'none'}; 5x5: {fmt(s5) or 'none'}."
        + "".join(
            f" C_in={c} at {h}x{h} is an input of {c * h * h:,} values, close to 28x28x192 = "
            f"{28 * 28 * 192:,}, so the same multiply-adds with a tenth of the input width; no "
            "network in the notes has such a layer."
            for c, h in sizes[:1]
        )
        + " For the inception row no input works: with 3a's widths the module has at least "
        f"{n['inception']['min_weights_any_input']:,} weights for any input width (its 3x3 "
        f"and 5x5 convs on their fixed reductions alone have {fixed:,}).",
    ]
    return "\n".join(lines) + "\n"


def figure(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, n = r["slide"], r["notes"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    labels = ["naive", "reduced\n(slide's convs)", "GoogLeNet 3b"]
    stated = [854, 358, 0]
    counted = [s["naive"]["counter"]["macs"] / M, s["reduced"]["counter"]["macs"] / M,
               s["reduced"]["googlenet_3b"]["macs"] / M]  # fmt: skip
    xs = range(len(labels))
    a.bar([x - 0.2 for x in xs], stated, 0.4, label="slide says")
    a.bar([x + 0.2 for x in xs], counted, 0.4, label="counter")
    for x, v in zip(xs, counted, strict=True):
        a.text(x + 0.2, v, f"{v:.0f}M", ha="center", va="bottom", fontsize=8)
    a.set_xticks(list(xs), labels)
    a.set_ylabel("multiply-adds (millions)")
    a.set_title("28x28x256 input (CSC413 slide)")
    a.legend()
    keys = ["inception", "conv3x3", "conv5x5"]
    for i, key in enumerate(keys):
        (p, mac), c = n[key]["notes"], n[key]["counter"]
        b.scatter(p, mac / M, marker="o", color=f"C{i}", label=f"{key}: notes")
        b.scatter(c["weights"], c["macs"] / M, marker="x", s=60, color=f"C{i}",
                  label=f"{key}: counter (28x28x192)")  # fmt: skip
        b.annotate("", (c["weights"], c["macs"] / M), (p, mac / M),
                   arrowprops={"arrowstyle": "->", "color": f"C{i}", "alpha": 0.5})  # fmt: skip
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("parameters (weights)")
    b.set_ylabel("multiply-adds (millions)")
    b.set_title("notes' table vs counter: params off by ~10x")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=str(ROOT / "experiments" / "results"))
    parser.add_argument(
        "--scale",
        choices=("full", "short"),
        default="full",
        help="search range for the notes' table: full C_in <= 1024, H <= 512; short 256, 128",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.scale)
    wall = time.perf_counter() - t0
    command = "python experiments/inception_cost.py" + (
        f" --scale {args.scale}" if args.scale != "full" else ""
    )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["meta"] = {"command": command, "wall_s": wall, "machine": MACHINE,
                      "jax": jax.__version__, "scale": args.scale}  # fmt: skip
    (out / "inception_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    text = report(result, command, wall)
    (out / "inception_cost.md").write_text(text)
    figure(result, out / "inception_cost.png")
    print(text)
    print(f"wrote {out}/inception_cost.{{json,md,png}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    _runs.run_main(main)
