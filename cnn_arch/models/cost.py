"""What a network costs, counted from its traced program: parameters, multiply-adds of its
convolutions and matrix products, and the receptive field of a stack of layers.

The multiply-add convention is the one of the papers and torchvision's GFLOPS: every
kernel tap at every output position of each ``conv_general_dilated`` (zero padding
included) and every product of each ``dot_general``; elementwise work (norms,
activations, pooling, biases) is not counted. Nothing is compiled or allocated: the
model is traced with ``jax.make_jaxpr`` on abstract inputs.

    cost.model_macs(models.create("resnet50"), (224, 224, 3))   # 4,089,184,256
    cost.receptive_field([(3, 1), (3, 1)])                      # 5: two 3x3 = one 5x5
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MacTerm:
    """One convolution or matrix product of a traced program and its multiply-adds."""

    kind: str  # 'conv' or 'dot'
    output_shape: tuple[int, ...]
    depth: int  # multiply-adds per output element: kernel taps x input channels per group
    macs: int

    def describe(self) -> str:
        out = "x".join(str(d) for d in self.output_shape)
        return f"{self.kind} {out} outputs x {self.depth} = {self.macs:,}"


def _sub_jaxprs(value: Any) -> Iterator[Any]:
    """Jaxprs nested in an equation parameter (pjit, custom_vjp, cond branches, ...)."""
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _sub_jaxprs(v)


def mac_terms(jaxpr: Any, times: int = 1) -> list[MacTerm]:
    """Every convolution and matrix product in ``jaxpr`` (nested jaxprs included; a
    ``scan`` body counts once per iteration) with its multiply-adds."""
    terms = []
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        out = tuple(eqn.outvars[0].aval.shape) if eqn.outvars else ()
        if name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            depth = rhs[rhs_spec[1]] * math.prod(rhs[d] for d in rhs_spec[2:])
            terms.append(MacTerm("conv", out, depth, times * math.prod(out) * depth))
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            depth = math.prod(lhs[d] for d in lhs_contract)
            terms.append(MacTerm("dot", out, depth, times * math.prod(out) * depth))
        repeat = times * (eqn.params.get("length", 1) if name == "scan" else 1)
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                terms += mac_terms(sub, repeat)
    return terms


def conv_dense_macs(jaxpr: Any) -> int:
    """Multiply-adds of every convolution and matrix product in ``jaxpr``."""
    return sum(t.macs for t in mac_terms(jaxpr))


def function_mac_terms(fn: Callable, *args: Any) -> list[MacTerm]:
    """``mac_terms`` of ``fn(*args)``; ``args`` may be ``jax.ShapeDtypeStruct``s."""
    return mac_terms(jax.make_jaxpr(fn)(*args).jaxpr)


def abstract_variables(model: nn.Module, input_shape: Sequence[int], batch: int = 1) -> Any:
    """The model's variables as shapes (nothing is computed): ``init`` under eval_shape."""
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)


def param_count(variables: Any) -> int:
    """Parameters (the ``params`` collection; BN running statistics are not parameters)."""
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables.get("params", {})))


def model_params(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Parameters of ``model`` built for inputs of shape ``input_shape`` (H, W, C)."""
    return param_count(abstract_variables(model, input_shape))


def model_mac_terms(model: nn.Module, input_shape: Sequence[int], batch: int = 1) -> list[MacTerm]:
    """The conv / dense terms of one inference forward pass (``train=False``)."""
    variables = abstract_variables(model, input_shape, batch)
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    return function_mac_terms(lambda v, x: model.apply(v, x, train=False), variables, x)


def model_macs(model: nn.Module, input_shape: Sequence[int], batch: int = 1) -> int:
    """Multiply-adds of one inference forward pass on ``batch`` inputs of ``input_shape``."""
    return sum(t.macs for t in model_mac_terms(model, input_shape, batch))


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """Side of the input window one output unit of a stack of layers sees.

    ``layers``: (kernel, stride) per layer, input first. Each layer widens the field by
    (kernel - 1) times the product of the strides below it: r = 1 + sum_l (k_l - 1)
    prod_{j<l} s_j. Two stacked 3x3 convs see 5x5 and three see 7x7 (Simonyan &
    Zisserman 2015, Sec. 2.3).
    """
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field
