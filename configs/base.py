"""Defaults shared by every config: every key of ``cnn_arch/schema.py`` at its default.

A model config starts from ``get_config()`` here and overrides what its paper's recipe
says. Names follow the Flax ImageNet example where they overlap. Every key's meaning
and constraint is declared once, in ``cnn_arch.schema``; ``cnn_arch.validate`` checks
them before anything compiles.
"""

import ml_collections

from cnn_arch import schema


def get_config() -> ml_collections.ConfigDict:
    return schema.default_config()
