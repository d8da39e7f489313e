"""Model zoo. ``create(name, num_classes=..., **overrides)`` and ``names()``.

Each module in this package defines one family and registers its named models
with ``registry.register``; importing the package imports every family, so adding
a family is adding a file.
"""

import importlib
import pkgutil

from cnn_arch.models.registry import ModelSpec, check_options, create, names, register, spec

# Shared pieces, not families: everything else in this package registers models.
_NOT_FAMILIES = ("registry", "layers", "blocks", "options", "cost")

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _NOT_FAMILIES:
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["ModelSpec", "check_options", "create", "names", "register", "spec"]
