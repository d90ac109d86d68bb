"""Segmenter: logits at the input size over every backbone family, parameter layout, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medtl_jax.models import build_classifier
from medtl_jax.models.segmenter import NON_SPATIAL_KEYS, Segmenter, build_segmenter, spatial_features
from medtl_jax.weights.store import merge_pretrained

# 'rbg' keys: XLA:CPU compiles their init several times faster than threefry's (22 s -> 4 s here).
RNGS = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}


class Tiny(nn.Module):
    """Three conv-BN-ReLU stages, VALID 3x3/2: 20 -> 9 -> 4 -> 1 px (odd, non-power-of-two ratios),
    plus a 'pre_logits' vector as VGG/AlexNet return."""

    @nn.compact
    def __call__(self, x, train):
        feats = {}
        for i, width in enumerate((4, 6, 8), start=1):
            x = nn.Conv(width, (3, 3), strides=2, padding="VALID")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
            feats[f"stage{i}"] = x
        feats["pre_logits"] = x.mean(axis=(1, 2), keepdims=True)
        return feats


def abstract_init(model, shape):
    """(logit shapes, variable shapes) of ``model`` on a zeros batch of ``shape``, without computing."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init_with_output(RNGS, x, train=False), x)


# One member of each family; inception_v3 needs >= 75 px and has odd (unpadded) map sizes.
FAMILIES = [("resnet18", 64), ("efficientnet_lite0", 64), ("efficientnet_b0", 64), ("inception_v3", 96),
            ("vgg11_bn", 64), ("alexnet", 64), ("densenet121", 64), ("cbr_tiny", 64)]


@pytest.mark.parametrize("name,px", FAMILIES)
def test_unet_logits_have_the_input_size_for_every_family(name, px):
    model = build_segmenter(name, 3, decoder="unet")
    logits, variables = abstract_init(model, (2, px, px + 8, 3))  # non-square: H and W kept apart
    assert logits.shape == (2, px, px + 8, 3) and logits.dtype == jnp.float32
    assert set(variables["params"]) == {"backbone", "decoder", "head"}
    assert variables["params"]["head"]["kernel"].shape[-1] == 3


@pytest.mark.parametrize("name,px", [("resnet18", 64), ("inception_v3", 96), ("vgg11_bn", 64)])
def test_fcn_logits_have_the_input_size(name, px):
    logits, variables = abstract_init(build_segmenter(name, 1, decoder="fcn"), (1, px, px, 3))
    assert logits.shape == (1, px, px, 1)
    assert set(variables["params"]) == {"backbone", "decoder", "head"}
    assert set(variables["batch_stats"]) == {"backbone"}  # the FCN head has no BatchNorm


def test_unet_blocks_fuse_each_skip_with_the_configured_widths():
    # resnet18 maps: stem 64, stage1 64, stage2 128, stage3 256, stage4 512 channels.
    _, variables = abstract_init(build_segmenter("resnet18", 4), (1, 64, 64, 3))
    dec = variables["params"]["decoder"]
    in_widths = [512 + 256, 256 + 128, 128 + 64, 64 + 64, 32]  # upsampled + skip; last block: no skip
    out_widths = [256, 128, 64, 32, 16]
    assert sorted(dec) == [f"block{i}" for i in range(5)]
    for i, (cin, cout) in enumerate(zip(in_widths, out_widths)):
        assert dec[f"block{i}"]["conv1"]["kernel"].shape == (3, 3, cin, cout)
        assert dec[f"block{i}"]["conv2"]["kernel"].shape == (3, 3, cout, cout)
    assert variables["params"]["head"]["kernel"].shape == (1, 1, 16, 4)


def test_short_decoder_channels_repeat_the_last_width():
    model = build_segmenter("cbr_tiny", 2, decoder_channels=(24, 8))
    _, variables = abstract_init(model, (1, 64, 64, 3))
    dec = variables["params"]["decoder"]
    widths = [dec[k]["conv2"]["kernel"].shape[-1] for k in sorted(dec)]
    assert widths[:2] == [24, 8] and set(widths[2:]) == {8}


def test_non_spatial_entries_are_ignored():
    feats = {"stage1": jnp.zeros((1, 4, 4, 2)), "pre_logits": jnp.zeros((1, 1, 1, 7)),
             "aux_logits": jnp.zeros((1, 1, 1, 3)), "stage2": jnp.zeros((1, 2, 2, 5))}
    assert [k for k, _ in spatial_features(feats)] == ["stage1", "stage2"]
    assert set(NON_SPATIAL_KEYS) >= {"pre_logits", "aux_logits"}
    with pytest.raises(ValueError, match="no spatial"):
        spatial_features({"pre_logits": jnp.zeros((1, 1, 1, 7))})


def test_invalid_options_raise():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="decoder"):
        build_segmenter("cbr_tiny", 1, decoder="deeplab").init(RNGS, x, train=False)
    with pytest.raises(ValueError, match="backbone_bn"):
        build_segmenter("cbr_tiny", 1, backbone_bn="off").init(RNGS, x, train=False)


@pytest.fixture(scope="module")
def resnet_unet():
    model = build_segmenter("resnet18", 2)
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    return model, jax.jit(lambda x: model.init(RNGS, x, train=False))(x), x


def test_real_forward_and_gradient_reach_every_part(resnet_unet):
    model, variables, x = resnet_unet
    target = jax.random.bernoulli(jax.random.key(3), 0.5, (2, 32, 32)).astype(jnp.int32)

    def loss(params):
        logits, state = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                    train=True, mutable=["batch_stats"])
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], axis=-1).mean()
        return ce, (logits, state)

    (value, (logits, state)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    assert logits.shape == (2, 32, 32, 2) and np.isfinite(float(value))
    norms = {k: float(optax.global_norm(g)) for k, g in grads.items()}
    assert all(np.isfinite(v) and v > 0 for v in norms.values()), norms
    # The first backbone conv gets gradient too (the skip path to the stem works).
    assert float(jnp.abs(grads["backbone"]["conv1"]["kernel"]).max()) > 0
    # Training updates the running statistics of backbone and decoder.
    for part in ("backbone", "decoder"):
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state["batch_stats"][part],
                               variables["batch_stats"][part])
        assert any(jax.tree.leaves(changed)), part


def test_frozen_backbone_bn_keeps_backbone_statistics():
    x = jax.random.normal(jax.random.key(5), (2, 20, 20, 1))
    variables = jax.jit(Segmenter(Tiny(), 2, decoder_channels=(8, 4)).init, static_argnames="train")(
        RNGS, x, train=False)
    for mode, backbone_changes in (("frozen", False), ("train", True)):
        model = Segmenter(Tiny(), 2, decoder_channels=(8, 4), backbone_bn=mode)
        _, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
        for part, expect in (("backbone", backbone_changes), ("decoder", True)):
            changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state["batch_stats"][part],
                                   variables["batch_stats"][part])
            assert any(jax.tree.leaves(changed)) == expect, (mode, part)


def test_imagenet_classifier_weights_merge_into_the_backbone(resnet_unet):
    _, variables, x = resnet_unet
    _, cls_shapes = jax.eval_shape(
        lambda x: build_classifier("resnet18", 1000).init_with_output(RNGS, x, train=False), x)
    rng = np.random.default_rng(0)
    pretrained = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), cls_shapes)
    merged = merge_pretrained(jax.device_get(variables), pretrained, skip=("head", "decoder"))
    np.testing.assert_array_equal(merged["params"]["backbone"]["conv1"]["kernel"],
                                  pretrained["params"]["backbone"]["conv1"]["kernel"])
    np.testing.assert_array_equal(merged["params"]["decoder"]["block0"]["conv1"]["kernel"],
                                  variables["params"]["decoder"]["block0"]["conv1"]["kernel"])


def test_fresh_fcn_is_the_progressively_upsampled_score_of_the_deepest_map():
    """Score projections start at zero, so logits = head(deepest map) bilinearly resized through the
    shallower maps' sizes to the input's; non-zero projections make those maps contribute."""
    model = Segmenter(Tiny(), 3, decoder="fcn")
    x = jax.random.normal(jax.random.key(4), (1, 20, 20, 1))
    variables = model.init(RNGS, x, train=False)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (1, 20, 20, 3)
    feats = Tiny().apply({"params": variables["params"]["backbone"],
                          "batch_stats": variables["batch_stats"]["backbone"]}, x, train=False)
    head = variables["params"]["head"]
    deep = np.asarray(feats["stage3"], np.float64)
    scores = deep @ np.asarray(head["kernel"][0, 0], np.float64) + np.asarray(head["bias"], np.float64)
    assert scores.shape == (1, 1, 1, 3)
    # From a 1x1 map every bilinear resize is a constant broadcast.
    np.testing.assert_allclose(logits, np.broadcast_to(scores, (1, 20, 20, 3)), rtol=1e-5, atol=1e-6)
    assert sorted(variables["params"]["decoder"]) == ["score_stage1", "score_stage2"]
    bumped = jax.tree.map(lambda p: p + 0.1, variables["params"]["decoder"])
    other = model.apply({**variables, "params": {**variables["params"], "decoder": bumped}}, x, train=False)
    assert float(jnp.abs(other - logits).max()) > 1e-3


def test_unet_on_a_hand_made_backbone_with_odd_sizes():
    model = Segmenter(Tiny(), 2, decoder_channels=(8, 4))
    logits, variables = abstract_init(model, (1, 20, 20, 1))
    assert logits.shape == (1, 20, 20, 2)
    dec = variables["params"]["decoder"]
    assert dec["block0"]["conv1"]["kernel"].shape == (3, 3, 8 + 6, 8)   # 1x1 -> 4x4, + stage2
    assert dec["block1"]["conv1"]["kernel"].shape == (3, 3, 8 + 4, 4)   # 4x4 -> 9x9, + stage1
    assert dec["block2"]["conv1"]["kernel"].shape == (3, 3, 4, 4)       # 9x9 -> 20x20, no skip


@pytest.mark.parametrize("decoder", ["unet", "fcn"])
def test_bfloat16_compute_keeps_float32_params_and_logits(decoder):
    model = Segmenter(Tiny(), 2, decoder=decoder, decoder_channels=(8, 4), dtype=jnp.bfloat16)
    logits, variables = abstract_init(model, (1, 20, 20, 1))
    assert logits.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
