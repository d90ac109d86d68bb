"""Inception-V3 (Szegedy et al. 2016) laid out exactly like torchvision's ``Inception3``.

Torchvision's layout: ``BasicConv2d`` = conv without bias + BatchNorm (eps 1e-3, torch momentum 0.1 =
flax 0.9) + ReLU; stem ``Conv2d_1a_3x3`` (3x3/2) .. ``Conv2d_4a_3x3`` with two unpadded 3x3/2 max-pools;
``Mixed_5b``-``5d`` (InceptionA), ``Mixed_6a`` (B, reduction), ``Mixed_6b``-``6e`` (C, factorised 7x7),
``Mixed_7a`` (D, reduction), ``Mixed_7b``-``7c`` (E); then global mean, Dropout(0.5) and ``fc`` (the
Classifier's ``head``). Convs are VALID unless torchvision pads them (its ``padding=`` is symmetric);
branch avg-pools are 3x3/1 pad 1 counting the padding (torch's ``count_include_pad=True``). Submodule
names are torchvision's (``Mixed_6b/branch7x7dbl_3/conv``), so ``medtl_jax.weights.torchvision_inception``
reads line by line.

``transform_input`` (default True, what the ImageNet weights need): the model is fed ImageNet-normalised
RGB, ``(x - mean_c) / std_c``, but Google's weights were trained on ``(x - 0.5) / 0.5``; the transform
re-normalises each channel, ``x * std_c / 0.5 + (mean_c - 0.5) / 0.5``, exactly as torchvision does
when it loads them. Set it False to feed [-1, 1] inputs directly (normalisation 'minus_one_one'),
e.g. with a folded 1-channel stem (``medtl_jax.weights.channels``); it requires 3 input channels.

Keras's ``keras.applications.InceptionV3`` (Keras ImageNet and RadImageNet files) has the same convs in
the same order and the same paddings ('same' = these symmetric pads at stride 1), and the same
BatchNorm eps 1e-3, but: its BatchNorm has no scale (``scale=False``; the converter fills ones), its
'same' branch avg-pools do NOT count the padding (``pool_count_include_pad=False``), it has no auxiliary
classifier, and it expects 'tf' input, ``x / 127.5 - 1`` (``transform_input=False`` with normalisation
'minus_one_one'). ``inception_v3_keras`` builds that.

Auxiliary classifier (``aux_logits=True``, off by default): as in torchvision it runs only when
``train``, on Mixed_6e's output (5x5/3 avg-pool, ``conv0`` 1x1 -> 128, ``conv1`` 5x5 -> 768, global
mean, ``fc`` -> ``aux_num_outputs``; no dropout), and it needs inputs of at least 299 px (Mixed_6e
must be 17x17 for the 5x5 conv after the pool). Its logits come back in the feature dict as
'aux_logits' with shape [B, 1, 1, aux_num_outputs], inserted BEFORE 'stage3', so the Classifier
still pools 'stage3'. A trainer gets them by capturing the backbone's output::

    logits, state = model.apply(variables, x, train=True, rngs=rngs,
                                mutable=["batch_stats", "intermediates"],
                                capture_intermediates=lambda mdl, _: mdl.name == "backbone")
    aux = state["intermediates"]["backbone"]["__call__"][0]["aux_logits"][:, 0, 0, :]
    loss = task_loss(logits) + 0.4 * task_loss(aux)   # Szegedy et al.'s weight

(the aux ``fc`` is a backbone parameter, ``backbone/AuxLogits/fc``: for a new task size it with
``aux_num_outputs`` and keep it out of ``merge_pretrained`` with ``skip=('head', 'backbone/AuxLogits/fc')``).

Feature dict (a ``collections.OrderedDict``, so its order survives ``jit``); sizes at 299 px:
  'stem'    Conv2d_4a_3x3 output, before max-pool 2: ~stride 4, 192 ch (71x71)
  'stage1'  Mixed_5d: ~stride 8, 288 ch (35x35)
  'stage2'  Mixed_6e: ~stride 16, 768 ch (17x17)
  ['aux_logits'  only with aux_logits=True and train=True]
  'stage3'  Mixed_7c: ~stride 32, 2048 ch (8x8)
(Unpadded convs and pools make sizes a little smaller than side / stride.) Inputs need a side of at
least 75 px (torchvision's ``min_size``), where Mixed_7c is 1x1.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.resnet import batch_norm
from medtl_jax.models.spec import ModelSpec, StageTable, keras_weights, torchvision_weights

MIN_INPUT_SIZE = 75
MIN_AUX_INPUT_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision: trunc_normal_(std=0.1) for every conv (bounds +-2 are 20 std, i.e. untruncated).
conv_init = nn.initializers.normal(0.1)


def transform_input(x: jax.Array) -> jax.Array:
    """ImageNet-normalised RGB -> the (x - 0.5) / 0.5 per channel the Google weights expect."""
    if x.shape[-1] != 3:
        raise ValueError(f"Inception transform_input needs 3 input channels, got {x.shape[-1]}; set "
                         "transform_input=False and feed inputs normalised to [-1, 1] instead")
    std = jnp.asarray(IMAGENET_STD, x.dtype)
    mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


class BasicConv2d(nn.Module):
    """conv (no bias) + BN (eps 1e-3) + ReLU; ``padding`` is torch's (rows, cols), symmetric."""

    features: int
    kernel: Sequence[int]
    stride: int = 1
    padding: Sequence[int] = (0, 0)
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        (ph, pw) = self.padding
        x = nn.Conv(self.features, tuple(self.kernel), (self.stride, self.stride),
                    padding=((ph, ph), (pw, pw)), use_bias=False, kernel_init=conv_init,
                    dtype=self.dtype, param_dtype=jnp.float32, name="conv")(x)
        x = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype, "bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x: jax.Array, count_include_pad: bool = True) -> jax.Array:
    """torch ``avg_pool2d(kernel_size=3, stride=1, padding=1)`` (padding zeros counted), or with
    ``count_include_pad=False`` Keras's ``AveragePooling2D(3, 1, 'same')`` (border means over real pixels)."""
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=count_include_pad)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torch ``max_pool2d(kernel_size=3, stride=2)``: unpadded, floor."""
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class _Mixed(nn.Module):
    """Base for the Inception blocks: ``conv(name, features, kernel, stride, padding)`` builds a
    BasicConv2d child with the block's dtype and BN constants; ``avg_pool`` is the branch pool."""

    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3
    pool_count_include_pad: bool = True

    def avg_pool(self, x: jax.Array) -> jax.Array:
        return _avg_pool_3x3(x, self.pool_count_include_pad)

    def conv(self, name: str, features: int, kernel: Sequence[int] = (1, 1), stride: int = 1,
             padding: Sequence[int] = (0, 0)) -> BasicConv2d:
        return BasicConv2d(features, kernel, stride, padding, self.dtype, self.bn_momentum, self.bn_epsilon,
                           name=name)


class InceptionA(_Mixed):
    """Mixed_5b-5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-pool-1x1 (``pool_features``)."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b1 = self.conv("branch1x1", 64)(x, train)
        b5 = self.conv("branch5x5_1", 48)(x, train)
        b5 = self.conv("branch5x5_2", 64, (5, 5), padding=(2, 2))(b5, train)
        b3 = self.conv("branch3x3dbl_1", 64)(x, train)
        b3 = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(b3, train)
        b3 = self.conv("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(b3, train)
        bp = self.conv("branch_pool", self.pool_features)(self.avg_pool(x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Mixed):
    """Mixed_6a (grid reduction): 3x3/2 | 1x1-3x3-3x3/2 | max-pool 3x3/2."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b3 = self.conv("branch3x3", 384, (3, 3), stride=2)(x, train)
        bd = self.conv("branch3x3dbl_1", 64)(x, train)
        bd = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(bd, train)
        bd = self.conv("branch3x3dbl_3", 96, (3, 3), stride=2)(bd, train)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(_Mixed):
    """Mixed_6b-6e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg-pool-1x1 (``channels_7x7`` inside)."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c7 = self.channels_7x7
        b1 = self.conv("branch1x1", 192)(x, train)
        b7 = self.conv("branch7x7_1", c7)(x, train)
        b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7, train)
        b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7, train)
        bd = self.conv("branch7x7dbl_1", c7)(x, train)
        bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd, train)
        bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd, train)
        bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd, train)
        bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd, train)
        bp = self.conv("branch_pool", 192)(self.avg_pool(x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Mixed):
    """Mixed_7a (grid reduction): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max-pool 3x3/2."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b3 = self.conv("branch3x3_1", 192)(x, train)
        b3 = self.conv("branch3x3_2", 320, (3, 3), stride=2)(b3, train)
        b7 = self.conv("branch7x7x3_1", 192)(x, train)
        b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7, train)
        b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7, train)
        b7 = self.conv("branch7x7x3_4", 192, (3, 3), stride=2)(b7, train)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(_Mixed):
    """Mixed_7b-7c: 1x1 | 1x1-(1x3 & 3x1) | 1x1-3x3-(1x3 & 3x1) | avg-pool-1x1."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b1 = self.conv("branch1x1", 320)(x, train)
        b3 = self.conv("branch3x3_1", 384)(x, train)
        b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3, train),
                              self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3, train)], axis=-1)
        bd = self.conv("branch3x3dbl_1", 448)(x, train)
        bd = self.conv("branch3x3dbl_2", 384, (3, 3), padding=(1, 1))(bd, train)
        bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd, train),
                              self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd, train)], axis=-1)
        bp = self.conv("branch_pool", 192)(self.avg_pool(x), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(_Mixed):
    """Auxiliary classifier on Mixed_6e: avg-pool 5x5/3, 1x1 -> 128, 5x5 -> 768, global mean, ``fc``.

    Returns logits shaped [B, 1, 1, num_outputs] (float32)."""

    num_outputs: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.avg_pool(x, (5, 5), (3, 3), padding="VALID")
        x = self.conv("conv0", 128)(x, train)
        x = self.conv("conv1", 768, (5, 5))(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True)
        fc = nn.Dense(self.num_outputs, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype,
                      param_dtype=jnp.float32, name="fc")
        return fc(x).astype(jnp.float32)


class InceptionV3(nn.Module):
    """A torchvision-compatible Inception-V3 trunk returning multi-scale features (see module docstring).

    Attributes:
      transform_input: re-normalise ImageNet-normalised input as the Google weights need (default True).
      aux_logits: build the auxiliary classifier (``backbone/AuxLogits``); runs only when ``train``.
      aux_num_outputs: width of the auxiliary classifier's ``fc``.
      dtype: compute dtype; parameters stay float32.
      bn_momentum, bn_epsilon: flax BatchNorm constants (torch momentum 0.1 == flax 0.9; eps 1e-3).
      pool_count_include_pad: whether the branch avg-pools count their zero padding (torchvision True,
        Keras False).
    """

    transform_input: bool = True
    aux_logits: bool = False
    aux_num_outputs: int = 1000
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3
    pool_count_include_pad: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        if min(x.shape[1:3]) < MIN_INPUT_SIZE:
            raise ValueError(f"Inception-V3 needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, "
                             f"got {x.shape[1]}x{x.shape[2]}")
        consts = dict(dtype=self.dtype, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
        conv = functools.partial(BasicConv2d, **consts)
        consts["pool_count_include_pad"] = self.pool_count_include_pad
        x = jnp.asarray(x, self.dtype)
        if self.transform_input:
            x = transform_input(x)
        x = conv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x, train)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x, train)
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x, train)
        x = _max_pool_3x3_s2(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x, train)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x, train)
        features = collections.OrderedDict(stem=x)  # OrderedDict: jax keeps its order through jit
        x = _max_pool_3x3_s2(x)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features=pool_features, name=name, **consts)(x, train)
        features["stage1"] = x
        x = InceptionB(name="Mixed_6a", **consts)(x, train)
        for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                                   ("Mixed_6e", 192)):
            x = InceptionC(channels_7x7=channels_7x7, name=name, **consts)(x, train)
        features["stage2"] = x
        if self.aux_logits:
            aux = InceptionAux(num_outputs=self.aux_num_outputs, name="AuxLogits", **consts)
            if train:
                if min(x.shape[1:3]) < 17:
                    raise ValueError(f"the Inception auxiliary classifier needs inputs of at least "
                                     f"{MIN_AUX_INPUT_SIZE} px (Mixed_6e is {x.shape[1]}x{x.shape[2]}, "
                                     "needs 17x17); build with aux_logits=False for smaller images")
                features["aux_logits"] = aux(x, train)
            elif self.is_initializing():
                aux(jnp.zeros((1, 17, 17, x.shape[-1]), x.dtype), train)  # create its variables anyway
        x = InceptionD(name="Mixed_7a", **consts)(x, train)
        x = InceptionE(name="Mixed_7b", **consts)(x, train)
        x = InceptionE(name="Mixed_7c", **consts)(x, train)
        features["stage3"] = x
        return features


def inception_v3(**kwargs) -> InceptionV3:
    """torchvision's Inception-V3 backbone; kwargs (transform_input, aux_logits, dtype ...) go to
    ``InceptionV3``."""
    return InceptionV3(**kwargs)


def inception_v3_keras(**kwargs) -> InceptionV3:
    """Keras's InceptionV3 (branch avg-pools excluding padding, 'tf' [-1, 1] input, no auxiliary
    classifier): the layout of Keras's ImageNet and RadImageNet files. kwargs go to ``InceptionV3``."""
    kwargs = {"transform_input": False, "pool_count_include_pad": False, **kwargs}
    return InceptionV3(**kwargs)


# Depth stages (medtl_jax.models.stages). The optional auxiliary classifier (AuxLogits) branches off
# stage2's output and is grouped with stage2.
DEPTH_STAGES: StageTable = (
    ("stem", r"Conv2d_\w+"),
    ("stage1", r"Mixed_5[a-z]"),
    ("stage2", r"Mixed_6[a-z]|AuxLogits"),
    ("stage3", r"Mixed_7[a-z]"),
)
STEM_KERNEL = "backbone/Conv2d_1a_3x3/conv"
STEM_OFFSET = "batch_stats/backbone/Conv2d_1a_3x3/bn/mean"

SPECS: dict[str, ModelSpec] = {
    # ImageNet-normalised input; the backbone's transform_input re-normalises it for Google's weights.
    # Google's weights are ported for the default model without the auxiliary classifier: the file's
    # AuxLogits.* keys are dropped on purpose (and listed by the layout's skipped_keys).
    "inception_v3": ModelSpec(
        inception_v3, input_norm="imagenet", default_input_size=299, dropout_rate=0.5, stages=DEPTH_STAGES,
        stem_kernel=STEM_KERNEL, stem_offset=STEM_OFFSET,
        weights=torchvision_weights("inception_v3_google-0cc3c7bd.pth", "torchvision_inception"),
        has_transform_input=True, has_aux_classifier=True),
    # keras.applications' InceptionV3 (Keras ImageNet or RadImageNet .h5 files): [-1, 1] input directly.
    "inception_v3_keras": ModelSpec(
        inception_v3_keras, input_norm="minus_one_one", default_input_size=299, dropout_rate=0.0,
        stages=DEPTH_STAGES, stem_kernel=STEM_KERNEL, stem_offset=STEM_OFFSET,
        weights=keras_weights("inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                              "keras_inception_v3"),
        has_aux_classifier=True),
}
