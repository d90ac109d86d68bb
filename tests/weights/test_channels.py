"""Folding a pretrained RGB stem for 1- (or C-) channel input computes what the RGB model computes on
copies of the image: exactly with one normalisation, exactly off the padding border with ImageNet's."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.models import MODELS, NORMALIZATION
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.models.resnet import resnet18
from medtl_jax.weights.channels import fold_input_channels, gray_normalization

IMAGENET = NORMALIZATION["imagenet"]


@pytest.fixture(scope="module")
def resnet18_variables():
    """A ResNet-18 classifier's variables, random (He-scaled kernels, BatchNorm statistics not 0/1),
    filled from ``eval_shape`` so no init runs."""
    model = Classifier(resnet18(), 10)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if "kernel" in name:
            return rng.normal(0.0, (2.0 / np.prod(leaf.shape[:-1])) ** 0.5, leaf.shape).astype(np.float32)
        low, high = (0.5, 1.5) if ("scale" in name or "var" in name) else (-0.2, 0.2)
        return rng.uniform(low, high, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.lru_cache(maxsize=None)
def _apply(model):
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


def _gray_pixels(seed: int = 1) -> np.ndarray:
    """A batch of 'gray images' in [0, 1] pixel units, NHWC with one channel."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (2, 32, 32, 1)).astype(np.float32)


def test_plain_fold_is_exact_with_one_normalisation(resnet18_variables):
    """Gray normalised once and copied to 3 channels == the folded model on the single channel (logits)."""
    x1 = (_gray_pixels() - 0.5) / 0.25
    folded = fold_input_channels(resnet18_variables, MODELS["resnet18"].stem_kernel, 1)
    assert folded["params"]["backbone"]["conv1"]["kernel"].shape == (7, 7, 1, 64)
    assert resnet18_variables["params"]["backbone"]["conv1"]["kernel"].shape == (7, 7, 3, 64)  # untouched
    model = Classifier(resnet18(), 10)
    expected = _apply(model)(resnet18_variables, np.repeat(x1, 3, axis=-1))
    got = _apply(model)(folded, x1)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


def _interior(size: int, kernel: int, stride: int, pad: int) -> slice:
    """Output positions whose conv window lies inside the image (no padding read)."""
    first = -(-pad // stride)
    last = (size - 1 + pad - (kernel - 1)) // stride
    return slice(first, last + 1)


def test_imagenet_fold_is_exact_off_the_padding_border(resnet18_variables):
    """3 copies normalised per channel with ImageNet's constants vs. the gray channel normalised with
    their averages: ResNet-18's stem (conv1 + bn1 + ReLU) agrees wherever conv1 reads no padding."""
    pixels = _gray_pixels()
    mean, std = (np.asarray(v, np.float32) for v in IMAGENET)
    gray_mean, gray_std = gray_normalization(*IMAGENET)
    assert (round(gray_mean, 4), round(gray_std, 4)) == (0.449, 0.226)
    x3 = (np.repeat(pixels, 3, axis=-1) - mean) / std
    x1 = (pixels - gray_mean) / gray_std

    backbone_vars = lambda v: {c: v[c]["backbone"] for c in ("params", "batch_stats")}  # noqa: E731
    stem = lambda v, x: resnet18().apply(backbone_vars(v), x, train=False)["stem"]  # noqa: E731
    folded = fold_input_channels(resnet18_variables, MODELS["resnet18"].stem_kernel, 1, input_norm=IMAGENET,
                                 offset_path=MODELS["resnet18"].stem_offset)
    expected, got = np.asarray(stem(resnet18_variables, x3)), np.asarray(stem(folded, x1))
    inside = _interior(32, 7, 2, 3)
    assert (inside.start, inside.stop) == (2, 15)  # rows/cols 0, 1 and 15 read conv1's padding
    np.testing.assert_allclose(got[:, inside, inside], expected[:, inside, inside], atol=1e-4, rtol=1e-5)
    border = float(np.abs(got - expected).max())
    print(f"ImageNet-norm fold: max |stem diff| on the border {border:.3g}, inside "
          f"{float(np.abs(got - expected)[:, inside, inside].max()):.1e}")
    assert border > 1e-3  # the documented, unavoidable border difference

    # The plain sum ignores the per-channel constants: off everywhere, not just on the border.
    plain = fold_input_channels(resnet18_variables, MODELS["resnet18"].stem_kernel, 1)
    assert np.abs(np.asarray(stem(plain, x1)) - expected)[:, inside, inside].max() > 1e-2


def test_offset_goes_into_a_conv_bias():
    """A stem with a bias (VGG, AlexNet): the offset is added to it, and the conv agrees off the border."""
    conv = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)))
    variables = jax.tree.map(np.asarray, conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))))
    pixels = _gray_pixels()[:, :8, :8]
    mean, std = (np.asarray(v, np.float32) for v in IMAGENET)
    gray_mean, gray_std = gray_normalization(*IMAGENET)
    folded = fold_input_channels(variables, "", 1, input_norm=IMAGENET, offset_path="params/bias")
    expected = conv.apply(variables, (np.repeat(pixels, 3, axis=-1) - mean) / std)
    got = conv.apply(folded, (pixels - gray_mean) / gray_std)
    np.testing.assert_allclose(got[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-5)
    assert not np.allclose(folded["params"]["bias"], variables["params"]["bias"])


@pytest.mark.parametrize("channels", [1, 2, 4, 5])
def test_other_channel_counts(channels, resnet18_variables):
    """C channels each get the same gray kernel scaled by 1/C: C identical channels == 3 RGB copies."""
    kernel = np.asarray(resnet18_variables["params"]["backbone"]["conv1"]["kernel"])
    folded = fold_input_channels(resnet18_variables, "backbone/conv1", channels)
    new = folded["params"]["backbone"]["conv1"]["kernel"]
    assert new.shape == (7, 7, channels, 64) and new.dtype == kernel.dtype
    np.testing.assert_allclose(new.sum(axis=2), kernel.sum(axis=2), rtol=1e-5, atol=1e-6)
    for c in range(channels):
        np.testing.assert_allclose(new[:, :, c], kernel.sum(axis=2) / channels, rtol=1e-5, atol=1e-7)
    assert folded["batch_stats"] is not None and "head" in folded["params"]


def test_three_channels_and_bad_arguments(resnet18_variables):
    same = fold_input_channels(resnet18_variables, "backbone/conv1", 3)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(resnet18_variables)):
        assert a is b
    with pytest.raises(ValueError, match="pass offset_path"):
        fold_input_channels(resnet18_variables, "backbone/conv1", 1, input_norm=IMAGENET)
    with pytest.raises(ValueError, match="must name a vector of 64"):
        fold_input_channels(resnet18_variables, "backbone/conv1", 1, input_norm=IMAGENET,
                            offset_path="batch_stats/backbone/layer2_0/bn1/mean")
    with pytest.raises(KeyError, match="no stem kernel"):
        fold_input_channels(resnet18_variables, "backbone/conv0", 1)
    with pytest.raises(ValueError, match="3 input channels"):
        fold_input_channels(resnet18_variables, "backbone/layer1_0/conv1", 1)
    # Equal per-channel constants leave no offset: no offset_path needed, same as the plain fold.
    minus_one_one = fold_input_channels(resnet18_variables, "backbone/conv1", 1,
                                        input_norm=NORMALIZATION["minus_one_one"])
    plain = fold_input_channels(resnet18_variables, "backbone/conv1", 1)
    np.testing.assert_allclose(minus_one_one["params"]["backbone"]["conv1"]["kernel"],
                               plain["params"]["backbone"]["conv1"]["kernel"], rtol=1e-6)


# Every model's stem paths (kernel with 3 input channels, offset of its width) are checked in
# tests/models/test_model_specs.py.
