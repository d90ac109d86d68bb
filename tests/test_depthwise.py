"""The shift-and-add depthwise conv equals XLA's grouped convolution, forward and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from medtl_jax.models.depthwise import DepthwiseConv, depthwise_conv_same, same_padding


def _reference(x, kernel, stride):
    return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=x.shape[-1], precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("size,kernel,stride", [(9, 3, 1), (8, 3, 2), (7, 5, 2), (4, 5, 1), (2, 5, 1),
                                                (2, 5, 2), (1, 3, 1), (5, 3, 2), (3, 5, 2)])
def test_forward_and_gradients_equal_grouped_conv(size, kernel, stride):
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, size, size + 1, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 1, 6)), jnp.float32)
    np.testing.assert_allclose(depthwise_conv_same(x, w, stride), _reference(x, w, stride), rtol=1e-5, atol=1e-5)
    probe = jnp.asarray(rng.normal(size=_reference(x, w, stride).shape), jnp.float32)
    grads = jax.grad(lambda x, w: (depthwise_conv_same(x, w, stride) * probe).sum(), argnums=(0, 1))(x, w)
    expected = jax.grad(lambda x, w: (_reference(x, w, stride) * probe).sum(), argnums=(0, 1))(x, w)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_same_padding_matches_tf_rule():
    assert same_padding(224, 3, 2) == (112, (0, 1))
    assert same_padding(2, 5, 1) == (2, (2, 2))
    assert same_padding(7, 5, 2) == (4, (2, 2))


def test_module_kernel_layout_is_flax_grouped_conv():
    x = jnp.ones((1, 8, 8, 4))
    variables = DepthwiseConv(3, 2).init(jax.random.PRNGKey(0), x)
    assert variables["params"]["kernel"].shape == (3, 3, 1, 4)
