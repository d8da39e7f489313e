"""Maximum softmax probability baseline (Hendrycks & Gimpel 2017): a LeNet-5 classifier of
Fashion-MNIST, with MNIST's test images as the out-of-distribution set.

python -m cnn_arch.anomaly --config=configs/anomaly/msp_fashion_mnist.py --workdir=W
"""

from configs.anomaly import _common


def get_config(scale: str = "small"):
    return _common.msp_config("fashion_mnist", "mnist", scale)
