"""The preprocessing spec: ``config.train_pp`` / ``config.eval_pp`` strings, parsed and built.

A spec is ops joined by ``|``, each an op name of ``ops.OPS`` with optional Python-literal
arguments (positional or keyword, simple arithmetic allowed), in big_vision's style::

    random_resized_crop(224, scale=(0.08, 1))|flip_lr|color_jitter(0.4, 0.4, 0.4)|normalize

Order: per-example ops (geometric, photometric), then ``normalize`` (exactly once), then
batch ops (mixup, cutmix). Every mistake is a UserError of one line naming the op and
its signature, raised while parsing, i.e. from ``dataset_info`` before anything compiles.

Seeds: the k-th random per-example op gets the k-th key of
``stateless_split(example_seed, number of random ops)``; batch ops likewise from the
batch's seed. The pipeline derives those seeds from (seed, epoch, position).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable

import tensorflow as tf

from cnn_arch.data import ops
from cnn_arch.errors import UserError


@dataclasses.dataclass(frozen=True)
class Step:
    """One op of a spec with its checked arguments and built function."""

    op: ops.OpDef
    kwargs: dict
    text: str  # as written in the spec
    fn: Callable


@dataclasses.dataclass(frozen=True)
class Spec:
    text: str
    key: str  # the config key it came from, for messages
    steps: tuple[Step, ...]

    @property
    def example_steps(self) -> tuple[Step, ...]:
        """Per-example ops before ``normalize``."""
        return tuple(s for s in self.steps if s.op.kind in ("geometric", "photometric"))

    @property
    def normalize_step(self) -> Step:
        return next(s for s in self.steps if s.op.kind == "normalize")

    @property
    def batch_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.op.kind == "batch")

    @property
    def is_random(self) -> bool:
        return any(s.op.random for s in self.steps)

    @property
    def reads_jpeg(self) -> bool:
        """The first op crops JPEG bytes itself (decode only the crop)."""
        return bool(self.example_steps) and self.example_steps[0].op.jpeg

    @property
    def soft_labels(self) -> bool:
        return bool(self.batch_steps)


# ---------------------------------------------------------------------- signatures


def type_text(hint) -> str:
    """A type annotation as users read it: int, float, (float, float), 'a'|'b'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return "|".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"({type_text(args[0])}, ...)"
        return "(" + ", ".join(type_text(a) for a in args) + ")"
    return getattr(hint, "__name__", str(hint))


def _value_text(value) -> str:
    if isinstance(value, float):
        return repr(round(value, 4))
    if isinstance(value, tuple):
        return "(" + ", ".join(_value_text(v) for v in value) + ")"
    return repr(value)


def signature(op: ops.OpDef) -> str:
    """``name(param: type = default, ...)`` of an op, for messages and the README."""
    parts = []
    for p in op.parameters:
        text = f"{p.name}: {type_text(op.hints[p.name])}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {_value_text(p.default)}"
        parts.append(text)
    return f"{op.name}({', '.join(parts)})"


class _Mismatch(Exception):
    pass


def _coerce(value, hint):
    """``value`` converted to ``hint`` (int -> float allowed), else _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is typing.Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported annotation {hint!r}")


# ------------------------------------------------------------------------- parsing

_NUMBER_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def _literal(node: ast.AST):
    """Constants, tuples/lists of them, and + - * / on numbers (e.g. ratio=(3/4, 4/3))."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _NUMBER_OPS:
        a, b = _literal(node.left), _literal(node.right)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            try:
                return _NUMBER_OPS[type(node.op)](a, b)
            except ZeroDivisionError:
                pass
    raise ValueError(f"{ast.unparse(node)} is not a number, string or tuple")


def split_ops(text: str) -> list[str]:
    """Splits at ``|`` outside brackets and quotes."""
    pieces, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    pieces.append("".join(current))
    return [p.strip() for p in pieces]


def _fail(key: str, spec: str, message: str) -> UserError:
    return UserError(f"config.{key}={spec!r}: {message}")


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, ops.OPS, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown op {name!r}{hint} (ops: {', '.join(ops.OPS)})"


def _parse_step(piece: str, key: str, text: str, ctx: ops.Context) -> Step:
    if not piece:
        raise _fail(key, text, "an empty op between two '|'")
    try:
        node = ast.parse(piece, mode="eval").body
    except SyntaxError:
        raise _fail(
            key, text, f"cannot read {piece!r}: write name or name(arg, key=value)"
        ) from None
    call = node if isinstance(node, ast.Call) else None
    name_node = call.func if call else node
    if not isinstance(name_node, ast.Name):
        raise _fail(key, text, f"cannot read {piece!r}: write name or name(arg, key=value)")
    if name_node.id not in ops.OPS:
        raise _fail(key, text, _unknown(name_node.id))
    op = ops.OPS[name_node.id]
    where = f"{signature(op)}: "
    try:
        args = [_literal(a) for a in call.args] if call else []
        kwargs = {k.arg: _literal(k.value) for k in call.keywords} if call else {}
        if call and any(k.arg is None for k in call.keywords):
            raise ValueError("**kwargs are not supported")
        bound = inspect.Signature(op.parameters).bind(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise _fail(key, text, f"{where}{e}") from None
    checked = {}
    for name, value in bound.arguments.items():
        hint = op.hints[name]
        try:
            checked[name] = _coerce(value, hint)
        except _Mismatch:
            raise _fail(
                key, text, f"{where}{name}={value!r} is not of type {type_text(hint)}"
            ) from None
    try:
        fn = op.factory(ctx, **checked)
    except ValueError as e:
        raise _fail(key, text, f"{where}{e}") from None
    return Step(op, checked, piece, fn)


def parse(text: str, key: str, ctx: ops.Context, *, task: str = "classification") -> Spec:
    """Parses and checks a spec (UserError on any mistake); builds each op's function."""
    steps = tuple(_parse_step(p, key, text, ctx) for p in split_ops(text))
    kinds = [s.op.kind for s in steps]
    if kinds.count("normalize") != 1:
        raise _fail(
            key,
            text,
            "needs exactly one normalize (after the per-example ops, before mixup/cutmix): "
            "without it the model would see raw 0-255 pixels",
        )
    at = kinds.index("normalize")
    for step, kind in zip(steps[:at], kinds[:at], strict=True):
        if kind == "batch":
            raise _fail(key, text, f"{signature(step.op)} mixes a batch: put it after normalize")
    for step, kind in zip(steps[at + 1 :], kinds[at + 1 :], strict=True):
        if kind != "batch":
            raise _fail(key, text, f"{signature(step.op)} must come before normalize")
    spec = Spec(text, key, steps)
    if spec.batch_steps and task != "classification":
        raise _fail(key, text, f"mixup/cutmix make soft class labels; {task} cannot use them")
    return spec


# ------------------------------------------------------------------------ building


def _run(step: Step, spec: Spec, *args):
    """Calls an op's function; a ValueError while tracing (e.g. a crop larger than the
    image) becomes the spec's UserError naming the op."""
    try:
        return step.fn(*args)
    except ValueError as e:
        raise _fail(spec.key, spec.text, f"{signature(step.op)}: {e}") from None


def example_fn(spec: Spec) -> Callable:
    """fn(example, seed) -> example running the per-example ops (not normalize: the
    pipeline puts it per example or per batch, see ``normalize_fn``)."""
    steps = spec.example_steps
    num_random = sum(s.op.random for s in steps)

    def fn(ex, seed):
        seeds = (
            tf.unstack(tf.random.experimental.stateless_split(seed, num_random))
            if num_random
            else []
        )
        for step in steps:
            ex = _run(step, spec, ex, seeds.pop(0) if step.op.random else None)
        return ex

    return fn


def normalize_fn(spec: Spec) -> Callable:
    """fn(images) -> float32 standardized images, for one image or a batch (elementwise)."""
    step = spec.normalize_step

    def fn(images):
        return _run(step, spec, {"image": images}, None)["image"]

    return fn


def batch_fn(spec: Spec, *, normalize: bool) -> Callable:
    """fn(batch, seed) -> batch: normalize first if asked (when no per-example op ran,
    normalizing the uint8 batch at once is cheaper), then mixup/cutmix with keys split
    from ``seed`` (unused without them)."""
    norm = normalize_fn(spec)
    mixers = spec.batch_steps

    def fn(batch, seed):
        out = {**batch, "image": norm(batch["image"])} if normalize else dict(batch)
        if mixers:
            seeds = tf.unstack(tf.random.experimental.stateless_split(seed, len(mixers)))
            for step, s in zip(mixers, seeds, strict=True):
                out = _run(step, spec, out, s)
        return out

    return fn


def check_fixed_size(spec: Spec, shape: tf.TensorShape) -> None:
    """UserError unless ``spec`` makes images of one fixed size (so they can be batched)."""
    if not shape.is_fully_defined():
        raise _fail(
            spec.key,
            spec.text,
            f"gives images of varying size {shape}; add a fixed-size op (resize, center_crop, "
            "random_resized_crop or random_crop) so examples can be batched",
        )
