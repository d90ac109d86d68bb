"""Layers the backbones share: fast convolution paths (im2col for small maps, depthwise), pooling, and the
classifier head.
"""
