"""python -m cnn_arch.convert --model=resnet50 --weights=FILE.pth --out=DIR

Converts torchvision weights (``.pth`` or ``.safetensors``) into an Orbax checkpoint
of our model's ``params`` / ``batch_stats`` plus ``provenance.json``; see
``cnn_arch.convert.store`` for the layout. Bad input: one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cnn_arch.convert import published, state_dict, store  # noqa: E402
from cnn_arch.errors import UserError  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage too; we print one line
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m cnn_arch.convert", description=__doc__.split("\n\n")[1])
    p.add_argument("--model", required=True, help=f"one of {', '.join(state_dict.SUPPORTED)}")
    p.add_argument("--weights", required=True, help="torchvision .pth or .safetensors file")
    p.add_argument("--out", required=True, help="new directory for the converted weights")
    p.add_argument("--num_classes", type=int, help="default: the checkpoint's classifier rows")
    p.add_argument(
        "--aux_logits",
        choices=("auto", "true", "false"),
        default="auto",
        help="googlenet: keep its auxiliary heads (auto: if the checkpoint has them)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    aux = {"auto": None, "true": True, "false": False}[args.aux_logits]
    try:
        if args.model not in state_dict.SUPPORTED:
            raise UserError(f"--model={args.model!r} is not one of {list(state_dict.SUPPORTED)}")
        out = os.path.abspath(args.out)
        if os.path.exists(out) and os.listdir(out):
            raise UserError(f"--out={out} exists and is not empty; choose a new directory")
        weights = os.path.abspath(args.weights)
        digest = store.sha256(weights) if os.path.isfile(weights) else ""
        known = published.identify(digest) if digest else None
        if known and known.model != args.model:
            raise UserError(f"{weights} is torchvision's {known.weights}, not {args.model}")
        result = state_dict.convert(args.model, weights, args.num_classes, aux_logits=aux)
        record = store.save_converted(
            out,
            result.variables,
            {
                "model": args.model,
                "model_kwargs": result.model_kwargs,
                "source": weights,
                "source_sha256": digest,
                # Recognized published weights: their name and documented accuracy.
                "torchvision_weights": known._asdict() if known else None,
                "torchvision_version": store.torchvision_version(),
                "dropped": {
                    "tensors": list(result.dropped),
                    "why": "num_batches_tracked only drives PyTorch's momentum=None average; "
                    "aux heads only when --aux_logits=false",
                },
                "preprocessing": store.preprocessing(args.model, known.resize if known else 256),
            },
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    counts = ", ".join(f"{n:,} {c}" for c, n in record["counts"].items())
    source = f"{known.weights} (top-1 {known.top1}%)" if known else os.path.basename(weights)
    print(
        f"{args.model} ({state_dict.describe(result.model_kwargs)}) from {source}: {counts}; "
        f"dropped {len(result.dropped)} tensors; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
