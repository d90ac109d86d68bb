"""Grad-CAM: gradients against independent references, localisation on a hand-built model, overlays."""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from medtl_jax.inference import gradcam as G
from medtl_jax.models import build_classifier
from medtl_jax.models.layers.heads import Classifier


def _random_variables(model, x, seed=0):
    """He-scaled random weights and perturbed BatchNorm statistics, drawn on the host from the variable
    shapes (no compiled init: fast, and any values serve the gradient identities tested here)."""
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, x, train=False))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name, z = jax.tree_util.keystr(path[-1:]), rng.standard_normal(s.shape).astype(np.float32)
        if "kernel" in name:
            return z * np.sqrt(2.0 / np.prod(s.shape[:-1]))
        return 1.0 + 0.1 * np.abs(z) if ("scale" in name or "var" in name) else 0.1 * z

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _model(name, size, outputs=3, **kwargs):
    model = build_classifier(name, outputs, **kwargs)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, size, size, 3))
    return model, _random_variables(model, x), x


@pytest.fixture(scope="module")
def resnet():
    return _model("resnet18", 16, stem="cifar")


class _VggLike(nn.Module):
    """VGG's layout in miniature: conv maps, then max-pool, flatten and a ReLU dense layer whose output
    is the 'pre_logits' entry, so the deepest map reaches the head only through further layers."""

    @nn.compact
    def __call__(self, x, train):
        features = collections.OrderedDict()
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        features["stage1"] = x
        x = nn.relu(nn.Conv(16, (3, 3), name="conv2")(nn.max_pool(x, (2, 2), (2, 2))))
        features["stage2"] = x
        x = nn.max_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
        features["pre_logits"] = nn.relu(nn.Dense(32, name="fc6")(x))[:, None, None, :]
        return features


@pytest.fixture(scope="module")
def vgg_like():
    model = Classifier(_VggLike(), 3)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    return model, _random_variables(model, x), x


def _chain_rule_check(model, variables, x, layer, class_index):
    """dy/dx computed directly must equal J_A(x)^T (dy/dA) with Grad-CAM's dy/dA: a wrong, scaled or
    missing gradient at A breaks the identity (every path from x to the logits passes through A)."""
    r = G.gradcam_details(model, variables, x, class_index=class_index, layer=layer)
    idx = np.broadcast_to(class_index, (x.shape[0],))

    def references(im, g):
        dy_dx = jax.grad(lambda im: model.apply(variables, im, train=False)[jnp.arange(len(idx)), idx].sum())(im)
        _, vjp = jax.vjp(lambda im: G._backbone_features(model, variables, im)[1][r.layer], im)
        return dy_dx, vjp(g)[0]

    dy_dx, through_a = jax.jit(references)(x, jnp.asarray(r.gradients))
    scale = float(jnp.abs(dy_dx).max())
    assert scale > 0
    np.testing.assert_allclose(np.asarray(through_a), np.asarray(dy_dx), atol=2e-4 * scale, rtol=2e-3)
    np.testing.assert_allclose(r.weights, r.gradients.mean(axis=(1, 2)), rtol=1e-6, atol=1e-9)
    raw = np.maximum(np.einsum("nhwc,nc->nhw", r.activations, r.weights), 0)
    np.testing.assert_allclose(r.raw, raw, rtol=1e-4, atol=1e-6 * max(raw.max(), 1e-12))
    assert r.cams.shape == x.shape[:3] and r.cams.min() >= 0 and r.cams.max() <= 1
    return r


def test_last_map_gradient_is_the_head_column_over_its_area(resnet):
    """Classifier = mean-pool + Dense: dy/dA = kernel[:, k] / (h*w) at every position, exactly."""
    model, variables, x = resnet
    r = G.gradcam_details(model, variables, x, class_index=2)
    assert r.layer == "stage4" and r.activations.shape == (2, 2, 2, 512)
    kernel = np.asarray(variables["params"]["head"]["kernel"])
    np.testing.assert_allclose(r.gradients, np.broadcast_to(kernel[:, 2] / 4, (2, 2, 2, 512)), rtol=1e-5)
    np.testing.assert_allclose(r.weights, np.broadcast_to(kernel[:, 2] / 4, (2, 512)), rtol=1e-5, atol=1e-9)
    logits = jax.jit(lambda v, im: model.apply(v, im, train=False))(variables, x)
    np.testing.assert_allclose(r.logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.scores, r.logits[:, 2], rtol=1e-6)
    np.testing.assert_array_equal(r.class_index, [2, 2])
    # class_index=None explains each image's top logit.
    top = G.gradcam_details(model, variables, x)
    np.testing.assert_array_equal(top.class_index, np.argmax(r.logits, axis=-1))
    # min-max normalised, bilinearly upsampled raw map
    up = np.asarray(jax.image.resize(jnp.asarray(r.raw), (2, 16, 16), "bilinear"))
    for i in range(2):
        if up[i].max() > up[i].min():
            np.testing.assert_allclose(r.cams[i], (up[i] - up[i].min()) / (up[i].max() - up[i].min()), atol=1e-5)
            assert r.cams[i].min() == 0 and r.cams[i].max() == pytest.approx(1)


def test_intermediate_stage_gradient_obeys_chain_rule(resnet):
    model, variables, x = resnet
    _chain_rule_check(model, variables, x, "stage3", 1)


def test_map_feeding_more_layers_obeys_chain_rule(vgg_like):
    """As in VGG/AlexNet, the deepest map reaches the head through max-pool and a dense layer, and the
    default layer skips the non-spatial 'pre_logits'."""
    model, variables, x = vgg_like
    assert G.default_layer(model, variables, x.shape) == "stage2"
    r = _chain_rule_check(model, variables, x, None, 0)
    assert r.layer == "stage2" and r.activations.shape == (2, 8, 8, 16)
    _chain_rule_check(model, variables, x, "stage1", 2)


def test_default_layer_is_the_deepest_map_with_spatial_extent():
    """Lite0's last map is 1x1 at 32 px (nothing to localise), 2x2 at 64 px."""
    model = build_classifier("efficientnet_lite0", 2)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert G.default_layer(model, variables, (1, 32, 32, 3)) == "stage3"
    assert G.default_layer(model, variables, (1, 64, 64, 3)) == "stage4"
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    assert G.gradcam_details(model, variables, jnp.ones((1, 32, 32, 3)), layer=None).layer == "stage3"


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("vgg11", 32), ("efficientnet_lite0", 64), ("densenet121", 64),
                                       ("alexnet", 64), ("inception_v3", 75)])
def test_every_family_obeys_chain_rule(name, size):
    model, variables, x = _model(name, size)
    layer = G.default_layer(model, variables, x.shape)
    _chain_rule_check(model, variables, x, layer, 1)


class _PoolBackbone(nn.Module):
    """Parameter-free backbone: 4x4 average pooling, so each map cell sees one 4x4 image block."""

    @nn.compact
    def __call__(self, x, train):
        return collections.OrderedDict(stage1=nn.avg_pool(x, (4, 4), (4, 4)))


def test_cam_peaks_where_the_class_evidence_is():
    model = Classifier(_PoolBackbone(), 2)
    kernel = np.zeros((3, 2), np.float32)
    kernel[0, 0] = kernel[1, 1] = 1.0  # logit 0 reads channel 0, logit 1 reads channel 1
    variables = {"params": {"head": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(2)}}}
    image = np.zeros((1, 32, 32, 3), np.float32)
    image[0, 0:8, 0:8, 0] = 1.0        # class-0 evidence top-left
    image[0, 24:32, 16:24, 1] = 1.0    # class-1 evidence bottom-middle
    r0 = G.gradcam_details(model, variables, image, class_index=0)
    r1 = G.gradcam_details(model, variables, image, class_index=1)
    pooled = image[0].reshape(8, 4, 8, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(r0.raw[0], pooled[..., 0] / 64, atol=1e-7)
    np.testing.assert_allclose(r1.raw[0], pooled[..., 1] / 64, atol=1e-7)
    assert r0.cams[0, :6, :6].min() == pytest.approx(1) and r0.cams[0, 12:, :].max() == 0
    assert r1.cams[0, 26:, 18:22].min() == pytest.approx(1) and r1.cams[0, :20, :].max() == 0
    # Deleting the top-CAM block removes the class score; deleting a zero-CAM block leaves it unchanged.
    score = lambda im: float(model.apply(variables, im, train=False)[0, 0])  # noqa: E731
    hot, cold = image.copy(), image.copy()
    hot[0, 0:8, 0:8] = 0
    cold[0, 12:20, 12:20] = 0
    assert score(image) > 0 and score(hot) == 0 and score(cold) == score(image)


def test_bad_layer_and_class_index_are_named(vgg_like):
    model, variables, x = vgg_like
    with pytest.raises(ValueError, match=r"layer='pre_logits' is not a spatial feature map of _VggLike; "
                                         r"available: stage1, stage2"):
        G.gradcam(model, variables, x, layer="pre_logits")
    with pytest.raises(ValueError, match=r"class_index=3 out of range for a model with 3 logits"):
        G.gradcam(model, variables, x, class_index=3)


def test_overlay_blends_the_colormap_at_the_image_size(tmp_path):
    import matplotlib
    image = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    cam = np.zeros((5, 5), np.float32)
    cam[2, 2] = 1.0
    out = G.overlay(image, cam, alpha=0.5)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(G.overlay(image, cam, alpha=0.0), np.repeat(image[..., None], 3, axis=-1))
    big = np.asarray(PIL.Image.fromarray(cam).resize((30, 20), PIL.Image.BILINEAR))
    heat = np.round(matplotlib.colormaps["jet"](np.clip(big, 0, 1))[..., :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(G.overlay(image, cam, alpha=1.0), heat)
    # the hottest pixel sits at the centre of the map, in image coordinates
    hot = np.unravel_index(np.argmax(big), big.shape)
    assert hot == (10, 15) or abs(hot[0] - 10) <= 2 and abs(hot[1] - 15) <= 3
    G.save_overlay_png(tmp_path / "o.png", image[..., None], cam)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "o.png")), G.overlay(image, cam))
    with pytest.raises(ValueError, match="uint8"):
        G.overlay(image.astype(np.float32), cam)
