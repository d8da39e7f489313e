"""cnn_arch: classic CNN architectures and Batch Normalization in JAX/Flax."""
