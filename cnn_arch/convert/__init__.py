"""torchvision weights -> our ``params`` / ``batch_stats``, and converted weights on disk.

``from_torchvision(model, state_dict_or_path)`` returns the variables; ``convert`` also
returns the model options they fit; ``python -m cnn_arch.convert`` writes them as an
Orbax checkpoint that ``load_converted(DIR)`` reads back.
"""

from cnn_arch.convert.state_dict import (
    SUPPORTED,
    Conversion,
    convert,
    from_torchvision,
    model_kwargs,
    read_state_dict,
)
from cnn_arch.convert.store import load_converted, provenance, save_converted

__all__ = [
    "SUPPORTED",
    "Conversion",
    "convert",
    "from_torchvision",
    "load_converted",
    "model_kwargs",
    "provenance",
    "read_state_dict",
    "save_converted",
]
