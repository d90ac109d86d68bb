"""Ported torchvision VGGs and AlexNet compute what torchvision computes (logits, block features), the
fc6 weight permutation is right, and the adaptive pool is torch's."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.models import alexnet, build_classifier, vgg
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.models.layers.pooling import adaptive_avg_pool
from medtl_jax.weights import store
from medtl_jax.weights.torchvision_vgg import convert_alexnet, convert_vgg, fc6_columns_to_hwc

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from tests.helpers.torch_reference import random_torch_model  # noqa: E402

# 64x64 leaves a 2x2 map before the 7x7 adaptive pool, so the pooled map is not constant and a wrong fc6
# column order would show in the logits; VGG-19 runs at 32 (1x1 map) to keep the suite quick.
VGG_CASES = [("vgg11", 64), ("vgg11_bn", 64), ("vgg13", 64), ("vgg13_bn", 64), ("vgg16", 64),
             ("vgg16_bn", 64), ("vgg19", 32), ("vgg19_bn", 32)]


def port(arch):
    """A random torchvision ``arch`` and its converted flax variables."""
    model = random_torch_model(getattr(torchvision.models, arch))
    state_dict = _torch_to_numpy(model.state_dict())
    variables = convert_alexnet(state_dict) if arch == "alexnet" else convert_vgg(state_dict, arch)
    return model, variables


@pytest.fixture(scope="module")
def ported():
    """``port`` that keeps the two models several tests share (VGG-11-BN, AlexNet); any other is built
    fresh, so at most ~3 GB of VGG weights are alive at a time."""
    shared = {arch: None for arch in ("vgg11_bn", "alexnet")}

    def get(arch):
        if arch not in shared:
            return port(arch)
        if shared[arch] is None:
            shared[arch] = port(arch)
        return shared[arch]

    yield get
    shared.clear()


def _torch_to_numpy(state_dict) -> dict:
    return {k: v.detach().numpy() for k, v in state_dict.items()}


def _nhwc(x) -> jnp.ndarray:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _compare_logits(name, model, variables, backbone, size, seed=1):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x).numpy()
    classifier = Classifier(backbone, 1000)
    logits = jax.jit(lambda v, x: classifier.apply(v, x, train=False))(variables, _nhwc(x))
    assert logits.dtype == jnp.float32 and logits.shape == (2, 1000)
    diff = float(np.max(np.abs(np.asarray(logits) - expected)))
    n_flax = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    n_torch = sum(p.numel() for p in model.parameters())
    print(f"{name}@{size}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(expected).max():.3f}); "
          f"{n_flax} parameters")
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    assert n_flax == n_torch


@pytest.mark.parametrize("arch,size", VGG_CASES)
def test_vgg_logits_match_torchvision(ported, arch, size):
    model, variables = ported(arch)
    _compare_logits(arch, model, variables, getattr(vgg, arch)(), size)


def test_alexnet_logits_match_torchvision(ported):
    """At 128x128 AlexNet's last map is 3x3 before the 6x6 adaptive pool, exercising fc6's column order."""
    model, variables = ported("alexnet")
    _compare_logits("alexnet", model, variables, alexnet.alexnet(), 128)


def test_fc6_permutation_maps_torch_flatten_to_nhwc_flatten():
    rng = np.random.default_rng(0)
    channels, height, width = 5, 7, 7
    x_nchw = rng.normal(size=(2, channels, height, width)).astype(np.float32)
    weight = rng.normal(size=(3, channels * height * width)).astype(np.float32)
    expected = x_nchw.reshape(2, -1) @ weight.T  # torch.flatten(x, 1) then Linear
    x_nhwc_flat = x_nchw.transpose(0, 2, 3, 1).reshape(2, -1)
    np.testing.assert_allclose(x_nhwc_flat @ fc6_columns_to_hwc(weight, channels, height, width).T,
                               expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(x_nhwc_flat @ weight.T, expected, atol=1e-2)  # the plain transpose is wrong
    with pytest.raises(ValueError, match="expected 5x6x6"):
        fc6_columns_to_hwc(weight, 5, 6, 6)


def test_vgg_block_features_match_torch_hooks(ported):
    """'stage1'..'stage5' are the ReLU outputs before each max-pool; 'pre_logits' is fc7 after ReLU."""
    model, variables = ported("vgg11_bn")
    captured = {}

    def capture(key):
        def hook(module, inputs, output):
            captured[key] = output.detach().clone().numpy()
        return hook

    pools = [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.MaxPool2d)]
    for stage, pool_index in enumerate(pools, start=1):
        model.features[pool_index - 1].register_forward_hook(capture(f"stage{stage}"))
    model.classifier[5].register_forward_hook(capture("pre_logits"))  # Dropout (identity in eval)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model(x)

    backbone_vars = {col: tree["backbone"] for col, tree in variables.items()}
    features = jax.jit(lambda v, x: vgg.vgg11_bn().apply(v, x, train=False))(backbone_vars, _nhwc(x))
    assert list(features) == ["stage1", "stage2", "stage3", "stage4", "stage5", "pre_logits"]
    assert [f.shape[1] for f in features.values()] == [32, 16, 8, 4, 2, 1]  # strides 1, 2, 4, 8, 16
    for key, value in features.items():
        want = captured[key]
        want = want.reshape(2, 1, 1, -1) if key == "pre_logits" else want.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(value), want, atol=1e-4, rtol=0, err_msg=key)


@pytest.mark.parametrize("in_hw,out_hw", [((2, 2), (7, 7)), ((5, 3), (7, 7)), ((13, 13), (6, 6)),
                                           ((14, 9), (7, 7)), ((1, 1), (6, 6)), ((7, 7), (7, 7))])
def test_adaptive_avg_pool_matches_torch(in_hw, out_hw):
    x = torch.randn(2, 3, *in_hw, generator=torch.Generator().manual_seed(3))
    expected = torch.nn.functional.adaptive_avg_pool2d(x, out_hw).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(adaptive_avg_pool(_nhwc(x), out_hw)), expected,
                               atol=1e-6, rtol=0)


def test_dropout_only_in_train_mode(ported):
    _, variables = ported("alexnet")
    classifier = Classifier(alexnet.alexnet(), 1000)
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    run = jax.jit(lambda v, key, train: classifier.apply(v, x, train=train, rngs={"dropout": key}),
                  static_argnums=2)
    eval_a, eval_b = run(variables, jax.random.key(2), False), run(variables, jax.random.key(3), False)
    train_a, train_b = run(variables, jax.random.key(2), True), run(variables, jax.random.key(3), True)
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(train_a, train_b) and not np.allclose(train_a, eval_a)


def test_imagenet_init_keeps_fc6_fc7_under_a_fresh_head(ported):
    _, pretrained = ported("alexnet")
    classifier = build_classifier("alexnet", 2)
    shapes = jax.eval_shape(lambda: classifier.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                                    train=False))
    assert set(shapes["params"]["backbone"]) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"}
    init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    merged = store.merge_pretrained(init, pretrained)  # skips the head
    np.testing.assert_array_equal(merged["params"]["backbone"]["fc6"]["kernel"],
                                  pretrained["params"]["backbone"]["fc6"]["kernel"])
    assert merged["params"]["head"]["kernel"].shape == (4096, 2)
    assert not merged["params"]["head"]["kernel"].any()


@pytest.mark.parametrize("arch", [a for a, _ in VGG_CASES] + ["alexnet"])
def test_pretrained_sources_are_torchvision_imagenet1k_v1(arch):
    url = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
    assert store.PRETRAINED_SOURCES[arch].url == url
    assert re.fullmatch(r"[a-z0-9_]+(-owt)?-[0-9a-f]{8}\.pth", store.PRETRAINED_SOURCES[arch].filename)
