"""knn detector on cifar10, one-class protocol (see configs/anomaly/_common.py).

python -m cnn_arch.anomaly --config=configs/anomaly/knn_cifar10.py \
    --config.normal_class=3 --workdir=W
(append ':full' to the config path for the accelerator setting)
"""

from configs.anomaly import _common


def get_config(scale: str = "small"):
    return _common.config("knn", "cifar10", scale)
