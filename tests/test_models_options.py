"""Model options are checked from declarations before anything is traced (issue 8 item 6):
``models.check_options(name, options)`` for every option of every registered model."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import pytest

from cnn_arch import models
from cnn_arch.models import layers, options

NAMES = models.names()


def declared(name: str) -> dict[str, tuple[str, ...]]:
    return options.option_choices(models.spec(name).module_cls)


@pytest.mark.parametrize("name", NAMES)
def test_every_string_option_is_declared_and_checked(name):
    spec = models.spec(name)
    choices = declared(name)
    for field in dataclasses.fields(spec.module_cls):
        default = spec.defaults.get(field.name, field.default)
        if field.name not in ("parent", "name") and (
            field.type == "str" or isinstance(default, str)
        ):
            assert field.name in choices, f"{name}.{field.name} has no declared choices"
    models.check_options(name, spec.defaults)  # the registered defaults are allowed
    for key, allowed in choices.items():
        assert len(allowed) >= 2 or key == "padding", (key, allowed)
        for value in allowed:
            models.check_options(name, {key: value})
        for bad in (allowed[0] + "x", 3, None):
            with pytest.raises(ValueError) as e:
                models.check_options(name, {key: bad})
            message = str(e.value)
            assert message.startswith(f"model_kwargs.{key}={bad!r} is not allowed for {name}:")
            assert message.endswith("choose one of " + ", ".join(allowed))
            assert "\n" not in message


def test_message_names_key_and_values():
    with pytest.raises(ValueError) as e:
        models.check_options("resnet20", {"norm": "batchh"})
    assert str(e.value) == (
        "model_kwargs.norm='batchh' is not allowed for resnet20: choose one of "
        + ", ".join(sorted(layers.NORMS))
    )
    with pytest.raises(ValueError, match=r"^model_kwargs\.nrm is not an option of resnet20: "):
        models.check_options("resnet20", {"nrm": "batch"})
    with pytest.raises(ValueError, match="the options are activation, bottleneck, dropout_rate"):
        models.check_options("resnet20", {"nrm": "batch"})


@pytest.mark.parametrize(
    "name, option, phrase",
    [
        ("resnet20", {"preact": "yes"}, "it must be True or False"),
        ("resnet20", {"se_ratio": 2.5}, "it must be an integer"),
        ("resnet20", {"stage_sizes": "333"}, "it must be a list of integers"),
        ("mobilenet_v1", {"width_multiplier": "half"}, "it must be a number"),
        ("vgg16", {"dropout_rate": 1.0}, "it must be a number in [0, 1)"),
        ("densenet121", {"drop_rate": -0.1}, "it must be a number in [0, 1)"),
    ],
)
def test_simple_types_are_checked(name, option, phrase):
    with pytest.raises(ValueError) as e:
        models.check_options(name, option)
    assert str(e.value).endswith(phrase)


def test_norm_kinds_registered_later_are_accepted():
    layers.NORMS["test_kind_for_options"] = layers.NORMS["batch"]
    try:
        models.check_options("resnet20", {"norm": "test_kind_for_options"})
    finally:
        del layers.NORMS["test_kind_for_options"]
    with pytest.raises(ValueError):
        models.check_options("resnet20", {"norm": "test_kind_for_options"})


def test_create_checks_before_building():
    with pytest.raises(ValueError, match=r"^stem='tiny' is not allowed for resnet20"):
        models.create("resnet20", stem="tiny")
    with pytest.raises(ValueError, match=r"^nrm is not an option of lenet5"):
        models.create("lenet5", nrm="batch")
    # the same check guards modules built without the registry, at trace time
    module = models.spec("resnet20").module_cls(stage_sizes=(1, 1, 1), stem="tiny")
    with pytest.raises(ValueError, match=r"^stem='tiny' is not allowed for ResNet"):
        jax.eval_shape(
            functools.partial(module.init, train=False), jax.random.key(0), jnp.zeros((1, 8, 8, 3))
        )


def _traces(name, shape, **overrides):
    model = models.create(name, num_classes=3, **overrides)
    init = functools.partial(model.init_with_output, train=False)
    out, _ = jax.eval_shape(init, jax.random.key(0), jnp.zeros(shape))
    return out.shape


# Every declared value builds: the declarations are what the models accept.
@pytest.mark.parametrize(
    "name, shape, small",
    [
        ("resnet20", (1, 16, 16, 3), {"stage_sizes": (1, 1, 1)}),
        ("alexnet", (1, 32, 32, 3), {}),
        ("squeezenet1_0", (1, 32, 32, 3), {}),
        ("densenet_bc100", (1, 16, 16, 3), {"block_sizes": (1, 1, 1)}),
        ("lenet5", (1, 28, 28, 1), {}),
        ("mlp", (1, 28, 28, 1), {}),
        ("vgg11", (1, 32, 32, 3), {}),
        ("unet_padded", (1, 20, 20, 1), {"depth": 1, "features": 4}),
    ],
)
def test_declared_values_build(name, shape, small):
    for key, allowed in declared(name).items():
        for value in allowed:
            if key == "norm" and name not in ("lenet5", "mlp"):
                continue  # every norm kind: on the two small models only
            if key == "cfg" and value != "A":
                continue  # the other VGG configurations differ only in depth
            overrides = small | {key: value}
            if key == "norm" and value == "group":
                overrides["norm_position"] = "before"
            assert _traces(name, shape, **overrides)[0] == 1, (key, value)
