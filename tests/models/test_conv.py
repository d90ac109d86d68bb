"""The small-map im2col convolution equals XLA's convolution, forward and gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from medtl_jax.models.layers.conv import Conv2D, conv2d, uses_im2col


def _reference(x, kernel, stride, padding):
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


CASES = [  # (height, width, kernel, stride, pad)
    (2, 2, 3, 1, 1), (1, 1, 3, 1, 1), (4, 4, 3, 2, 1), (3, 2, 3, 1, 1), (4, 4, 7, 1, 3), (2, 3, 5, 1, 2),
    (9, 9, 3, 1, 1), (8, 8, 3, 2, 1),  # these two take the XLA path
]


@pytest.mark.parametrize("h,w,k,stride,pad", CASES)
def test_forward_and_gradients_equal_xla_conv(h, w, k, stride, pad):
    rng = np.random.default_rng(h * 1000 + w * 100 + k * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, h, w, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, 5, 4)), jnp.float32)
    padding = ((pad, pad), (pad, pad))
    want = _reference(x, kernel, stride, padding)
    np.testing.assert_allclose(conv2d(x, kernel, stride, padding), want, rtol=1e-5, atol=1e-4)
    probe = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
    got_grads = jax.grad(lambda x, k_: (conv2d(x, k_, stride, padding) * probe).sum(), argnums=(0, 1))(x, kernel)
    want_grads = jax.grad(lambda x, k_: (_reference(x, k_, stride, padding) * probe).sum(), argnums=(0, 1))(x, kernel)
    for got, expected in zip(got_grads, want_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_path_choice():
    assert uses_im2col(2, 2, (3, 3), 1, ((1, 1), (1, 1)))
    assert uses_im2col(4, 4, (3, 3), 2, ((1, 1), (1, 1)))  # 2x2 output
    assert not uses_im2col(8, 8, (3, 3), 1, ((1, 1), (1, 1)))
    assert not uses_im2col(1, 1, (1, 1), 1, ((0, 0), (0, 0)))


def test_module_matches_flax_conv_with_same_parameters():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 2, 3)), jnp.float32)
    ours = Conv2D(6, 3, padding=((1, 1), (1, 1)), use_bias=True)
    theirs = nn.Conv(6, (3, 3), padding=((1, 1), (1, 1)))
    variables = theirs.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), rtol=1e-5, atol=1e-5)
