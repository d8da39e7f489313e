"""cnn_arch: classic CNN architectures and Batch Normalization in JAX/Flax."""

# Before anything can start a JAX backend: XLA reads XLA_FLAGS only then.
from cnn_arch import xla_tuning as _xla_tuning

_xla_tuning.apply()
