"""torchvision's published ImageNet weights, recognized by the sha256 prefix in their
file names (``resnet50-0676ba61.pth``; torch.hub checks downloads against the same
prefix), with the eval resize and the top-1/top-5 torchvision documents for each
(read from torchvision 0.29.1's weight metadata; every eval crop is 224, bilinear).
"""

from __future__ import annotations

from typing import NamedTuple


class Published(NamedTuple):
    model: str
    weights: str  # torchvision's enum member
    resize: int  # shorter side before the centre 224 crop
    top1: float  # ImageNet-1K validation, torchvision's documented figures
    top5: float


PUBLISHED: dict[str, Published] = {
    "7be5be79": Published("alexnet", "AlexNet_Weights.IMAGENET1K_V1", 256, 56.522, 79.066),
    "a639ec97": Published("densenet121", "DenseNet121_Weights.IMAGENET1K_V1", 256, 74.434, 91.972),
    "8d451a50": Published("densenet161", "DenseNet161_Weights.IMAGENET1K_V1", 256, 77.138, 93.56),
    "b2777c0a": Published("densenet169", "DenseNet169_Weights.IMAGENET1K_V1", 256, 75.6, 92.806),
    "c1103571": Published("densenet201", "DenseNet201_Weights.IMAGENET1K_V1", 256, 76.896, 93.37),
    "1378be20": Published("googlenet", "GoogLeNet_Weights.IMAGENET1K_V1", 256, 69.778, 89.53),
    "63fe2227": Published("resnet101", "ResNet101_Weights.IMAGENET1K_V1", 256, 77.374, 93.546),
    "cd907fc2": Published("resnet101", "ResNet101_Weights.IMAGENET1K_V2", 232, 81.886, 95.78),
    "394f9c45": Published("resnet152", "ResNet152_Weights.IMAGENET1K_V1", 256, 78.312, 94.046),
    "f82ba261": Published("resnet152", "ResNet152_Weights.IMAGENET1K_V2", 232, 82.284, 96.002),
    "f37072fd": Published("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 256, 69.758, 89.078),
    "b627a593": Published("resnet34", "ResNet34_Weights.IMAGENET1K_V1", 256, 73.314, 91.42),
    "0676ba61": Published("resnet50", "ResNet50_Weights.IMAGENET1K_V1", 256, 76.13, 92.862),
    "11ad3fa6": Published("resnet50", "ResNet50_Weights.IMAGENET1K_V2", 232, 80.858, 95.434),
    "8ba56ff5": Published(
        "resnext101_32x8d", "ResNeXt101_32X8D_Weights.IMAGENET1K_V1", 256, 79.312, 94.526
    ),
    "110c445d": Published(
        "resnext101_32x8d", "ResNeXt101_32X8D_Weights.IMAGENET1K_V2", 232, 82.834, 96.228
    ),
    "7cdf4587": Published(
        "resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V1", 256, 77.618, 93.698
    ),
    "1a0047aa": Published(
        "resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V2", 232, 81.198, 95.34
    ),
    "f707e7126e": Published(
        "shufflenet_v2_x0_5", "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1", 256, 60.552, 81.746
    ),
    "5666bf0f80": Published(
        "shufflenet_v2_x1_0", "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1", 256, 69.362, 88.316
    ),
    "3c479a10": Published(
        "shufflenet_v2_x1_5", "ShuffleNet_V2_X1_5_Weights.IMAGENET1K_V1", 232, 72.996, 91.086
    ),
    "8be3c8ee": Published(
        "shufflenet_v2_x2_0", "ShuffleNet_V2_X2_0_Weights.IMAGENET1K_V1", 232, 76.23, 93.006
    ),
    "b66bff10": Published(
        "squeezenet1_0", "SqueezeNet1_0_Weights.IMAGENET1K_V1", 256, 58.092, 80.42
    ),
    "b8a52dc0": Published(
        "squeezenet1_1", "SqueezeNet1_1_Weights.IMAGENET1K_V1", 256, 58.178, 80.624
    ),
    "8a719046": Published("vgg11", "VGG11_Weights.IMAGENET1K_V1", 256, 69.02, 88.628),
    "6002323d": Published("vgg11_bn", "VGG11_BN_Weights.IMAGENET1K_V1", 256, 70.37, 89.81),
    "19584684": Published("vgg13", "VGG13_Weights.IMAGENET1K_V1", 256, 69.928, 89.246),
    "abd245e5": Published("vgg13_bn", "VGG13_BN_Weights.IMAGENET1K_V1", 256, 71.586, 90.374),
    "397923af": Published("vgg16", "VGG16_Weights.IMAGENET1K_V1", 256, 71.592, 90.382),
    "6c64b313": Published("vgg16_bn", "VGG16_BN_Weights.IMAGENET1K_V1", 256, 73.36, 91.516),
    "dcbb9e9d": Published("vgg19", "VGG19_Weights.IMAGENET1K_V1", 256, 72.376, 90.876),
    "c79401a0": Published("vgg19_bn", "VGG19_BN_Weights.IMAGENET1K_V1", 256, 74.218, 91.842),
    "32ee1156": Published(
        "wide_resnet101_2", "Wide_ResNet101_2_Weights.IMAGENET1K_V1", 256, 78.848, 94.284
    ),
    "d733dc28": Published(
        "wide_resnet101_2", "Wide_ResNet101_2_Weights.IMAGENET1K_V2", 232, 82.51, 96.02
    ),
    "95faca4d": Published(
        "wide_resnet50_2", "Wide_ResNet50_2_Weights.IMAGENET1K_V1", 256, 78.468, 94.086
    ),
    "9ba9bcbe": Published(
        "wide_resnet50_2", "Wide_ResNet50_2_Weights.IMAGENET1K_V2", 232, 81.602, 95.758
    ),
}


def identify(sha256: str) -> Published | None:
    """The published weights whose file has this sha256, if any."""
    for prefix, published in PUBLISHED.items():
        if sha256.startswith(prefix):
            return published
    return None
