"""Model definitions (importing this package imports Keras)."""

from .resnet import SPECS, ResNetSpec, build_resnet, conv_block, count_macs, identity_block

__all__ = ["SPECS", "ResNetSpec", "build_resnet", "conv_block", "count_macs", "identity_block"]
