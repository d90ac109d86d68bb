"""AlexNet (Krizhevsky et al. 2012) in torchvision's single-tower "one weird trick" layout.

Torchvision's layout: conv1 11x11/4 pad 2 -> 64, ReLU, max-pool 3/2; conv2 5x5 pad 2 -> 192, ReLU,
max-pool 3/2; conv3 3x3 pad 1 -> 384, ReLU; conv4 -> 256, ReLU; conv5 -> 256, ReLU, max-pool 3/2; all
convs with bias, no BatchNorm, pools unpadded (floor). Then ``AdaptiveAvgPool2d(6, 6)``, Dropout(0.5),
``fc6`` (9216 -> 4096), ReLU, Dropout(0.5), ``fc7`` (4096 -> 4096), ReLU, ``fc8`` (-> 1000). Note there is
no dropout after fc7. Submodules are named ``conv1`` .. ``conv5``, ``fc6``, ``fc7``; fc8 is the
``Classifier``'s ``head``. The map from torchvision's ``features.N`` / ``classifier.N`` keys is in
``medtl_jax.weights.torchvision_vgg``.

Feature dict (a ``collections.OrderedDict``), each map taken BEFORE the max-pool that follows it:
  'stage1'      conv1 + ReLU, stride ~4, 64 ch (55x55 at 224)
  'stage2'      conv2 + ReLU, stride ~8, 192 ch (27x27)
  'stage3'      conv5 + ReLU, stride ~16, 256 ch (13x13; conv3-5 share that resolution)
  'pre_logits'  fc7 + ReLU, [B, 1, 1, 4096]: the Classifier's average pool is the identity and its
                ``head`` is fc8, so fine-tuning keeps the pretrained fc6/fc7.
Inputs need a side of at least 63 (the three unpadded 3/2 pools must leave one pixel).
"""

from __future__ import annotations

import collections
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.layers.pooling import adaptive_avg_pool
from medtl_jax.models.spec import ModelSpec, StageTable, torchvision_weights

POOLED_SIZE = (6, 6)
# torch's default Conv2d/Linear init (kaiming_uniform, a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# (name, features, kernel, stride, pad, max-pool after it)
CONVS: tuple[tuple[str, int, int, int, int, bool], ...] = (
    ("conv1", 64, 11, 4, 2, True),
    ("conv2", 192, 5, 1, 2, True),
    ("conv3", 384, 3, 1, 1, False),
    ("conv4", 256, 3, 1, 1, False),
    ("conv5", 256, 3, 1, 1, True),
)


class AlexNet(nn.Module):
    """A torchvision-compatible AlexNet returning three conv features and fc7's output.

    Attributes:
      dropout_rate: dropout before fc6 and before fc7, active when ``train`` (uses the 'dropout' rng).
      dtype: compute dtype; parameters stay float32.
    """

    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        x = jnp.asarray(x, self.dtype)
        features = collections.OrderedDict()  # OrderedDict: jax keeps its order through jit
        for name, width, kernel, stride, pad, pool_after in CONVS:
            x = nn.Conv(width, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                        kernel_init=torch_default_init, dtype=self.dtype, param_dtype=jnp.float32,
                        name=name)(x)
            x = nn.relu(x)
            if pool_after:
                features[f"stage{len(features) + 1}"] = x
                x = nn.max_pool(x, (3, 3), (2, 2), padding="VALID")
        x = adaptive_avg_pool(x, POOLED_SIZE)
        x = x.reshape(x.shape[0], -1)  # NHWC flatten: (h, w, c) order; the weight port permutes fc6
        for name in ("fc6", "fc7"):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.Dense(4096, kernel_init=torch_default_init, dtype=self.dtype,
                         param_dtype=jnp.float32, name=name)(x)
            x = nn.relu(x)
        features["pre_logits"] = x[:, None, None, :]
        return features


def alexnet(**kwargs) -> AlexNet:
    """torchvision's AlexNet backbone; kwargs (dtype, dropout_rate) go to ``AlexNet``."""
    return AlexNet(**kwargs)


# Depth stages (medtl_jax.models.stages): one per feature map, no separate stem, and a last 'pre_logits'
# stage, fc6 and fc7, which the feature dict ends on.
DEPTH_STAGES: StageTable = (
    ("stage1", r"conv1"),
    ("stage2", r"conv2"),
    ("stage3", r"conv[345]"),
    ("pre_logits", r"fc6|fc7"),
)

SPECS: dict[str, ModelSpec] = {
    # ImageNet normalisation, 224 input, no extra dropout at the head (AlexNet keeps its own before fc6
    # and fc7), torchvision's IMAGENET1K_V1 weights.
    "alexnet": ModelSpec(alexnet, input_norm="imagenet", default_input_size=224, dropout_rate=0.0,
                         stages=DEPTH_STAGES, stem_kernel="backbone/conv1",
                         stem_offset="params/backbone/conv1/bias",
                         weights=torchvision_weights("alexnet-owt-7be5be79.pth", "torchvision_alexnet")),
}
