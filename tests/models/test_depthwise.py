"""The shift-and-add depthwise conv equals XLA's grouped convolution, forward and gradient, with TF 'SAME'
padding and with torch's symmetric padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from medtl_jax.models.layers.depthwise import (DepthwiseConv, depthwise_conv_padded, depthwise_conv_same,
                                       same_padding, symmetric_padding)


def _reference(x, kernel, stride, padding="SAME"):
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=x.shape[-1], precision=lax.Precision.HIGHEST)


def _assert_matches_reference(conv, reference, x, w):
    """Forward and both gradients (through a random probe) of ``conv`` equal ``reference``'s."""
    np.testing.assert_allclose(conv(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
    probe = jnp.asarray(np.random.default_rng(0).normal(size=reference(x, w).shape), jnp.float32)
    grads = jax.grad(lambda x, w: (conv(x, w) * probe).sum(), argnums=(0, 1))(x, w)
    expected = jax.grad(lambda x, w: (reference(x, w) * probe).sum(), argnums=(0, 1))(x, w)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size,kernel,stride", [(9, 3, 1), (8, 3, 2), (7, 5, 2), (4, 5, 1), (2, 5, 1),
                                                (2, 5, 2), (1, 3, 1), (5, 3, 2), (3, 5, 2)])
def test_forward_and_gradients_equal_grouped_conv(size, kernel, stride):
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, size, size + 1, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 1, 6)), jnp.float32)
    _assert_matches_reference(lambda x, w: depthwise_conv_same(x, w, stride),
                              lambda x, w: _reference(x, w, stride), x, w)


# torchvision's (k - 1) // 2 padding at stride 1 and 2, odd and even sides, maps smaller than the kernel,
# and paddings that leave input rows unread (crop) or taps that read only zeros (skipped).
@pytest.mark.parametrize("size,kernel,stride,pad", [(9, 3, 1, 1), (8, 3, 2, 1), (8, 5, 2, 2), (2, 5, 1, 2),
                                                    (1, 3, 2, 1), (10, 3, 2, 0), (4, 3, 2, 2)])
def test_symmetric_padding_equals_grouped_conv(size, kernel, stride, pad):
    rng = np.random.default_rng(size * 1000 + kernel * 100 + stride * 10 + pad)
    x = jnp.asarray(rng.normal(size=(2, size, size + 1, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 1, 6)), jnp.float32)
    _assert_matches_reference(lambda x, w: depthwise_conv_padded(x, w, stride, pad),
                              lambda x, w: _reference(x, w, stride, ((pad, pad), (pad, pad))), x, w)


def test_same_padding_matches_tf_rule():
    assert same_padding(224, 3, 2) == (112, (0, 1))
    assert same_padding(2, 5, 1) == (2, (2, 2))
    assert same_padding(7, 5, 2) == (4, (2, 2))


def test_symmetric_padding_is_torch_rule():
    assert symmetric_padding(224, 3, 2, 1) == (112, (1, 0))  # torch pads 1 after too; that row is never read
    assert symmetric_padding(7, 5, 2, 2) == (4, (2, 2))
    assert symmetric_padding(10, 3, 2, 0) == (4, (0, -1))  # the last input row is never read
    with pytest.raises(ValueError, match="does not fit"):
        symmetric_padding(2, 5, 1, 0)


def test_module_padding_modes():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 4)), jnp.float32)
    module = DepthwiseConv(3, 2, padding=1)
    variables = module.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(module.apply(variables, x),
                               _reference(x, variables["params"]["kernel"], 2, ((1, 1), (1, 1))), atol=1e-5)
    same = DepthwiseConv(3, 2).apply(variables, x)
    assert same.shape == (1, 4, 4, 4) and not np.allclose(same, module.apply(variables, x))
    with pytest.raises(ValueError, match="padding must be"):
        DepthwiseConv(3, 2, padding="VALID").init(jax.random.PRNGKey(0), x)


def test_module_kernel_layout_is_flax_grouped_conv():
    x = jnp.ones((1, 8, 8, 4))
    variables = DepthwiseConv(3, 2).init(jax.random.PRNGKey(0), x)
    assert variables["params"]["kernel"].shape == (3, 3, 1, 4)
