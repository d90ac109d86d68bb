"""Ported torchvision EfficientNet-B0..B3 compute what torchvision computes (logits, and B0's features)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.models import MODELS, efficientnet
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.weights import store
from medtl_jax.weights.torchvision_efficientnet import convert_efficientnet, efficientnet_name_map

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from tests.helpers.torch_reference import random_torch_model  # noqa: E402

# Small inputs keep the suite quick; 48 for B3 gives its last stage a 2x2 map (5x5 depthwise on 3x3 before).
CASES = [("efficientnet_b0", 64), ("efficientnet_b1", 32), ("efficientnet_b2", 32), ("efficientnet_b3", 48)]
# torchvision's num_params for the IMAGENET1K weights (backbone + 1000-way classifier).
PARAMS = {"efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
          "efficientnet_b3": 12_233_232}
# XLA:CPU at -O0 compiles these ~250-layer graphs much faster; the same ops run, only unfused.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _torch_to_numpy(state_dict) -> dict:
    return {k: v.detach().numpy() for k, v in state_dict.items()}


def _torch_features(model, x) -> dict:
    """torchvision's outputs of features.1, .2, .3, .5 and .8 (the flax feature dict's sources)."""
    captured = {}

    def capture(key):
        def hook(module, inputs, output):
            captured[key] = output.detach().clone().numpy().transpose(0, 2, 3, 1)
        return hook

    sources = {"stem": 1, "stage1": 2, "stage2": 3, "stage3": 5, "stage4": 8}
    handles = [model.features[i].register_forward_hook(capture(k)) for k, i in sources.items()]
    with torch.no_grad():
        logits = model(x).numpy()
    for handle in handles:
        handle.remove()
    return logits, captured


@pytest.mark.parametrize("arch,size", CASES)
def test_logits_match_torchvision(arch, size):
    model = random_torch_model(getattr(torchvision.models, arch))
    variables = convert_efficientnet(_torch_to_numpy(model.state_dict()), arch)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    expected, captured = _torch_features(model, x)

    classifier = Classifier(getattr(efficientnet, arch)(), 1000)

    def forward(v, x):
        logits, state = classifier.apply(v, x, train=False, mutable=["intermediates"],
                                         capture_intermediates=lambda mdl, _: mdl.name == "backbone")
        return logits, state["intermediates"]["backbone"]["__call__"][0]

    x_nhwc = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    logits, features = jax.jit(forward, compiler_options=FAST_COMPILE)(variables, x_nhwc)

    diff = float(np.max(np.abs(np.asarray(logits) - expected)))
    n_flax = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    print(f"{arch}@{size}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(expected).max():.3f}); "
          f"{n_flax} parameters")
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    assert n_flax == sum(p.numel() for p in model.parameters()) == PARAMS[arch]
    assert list(features) == ["stem", "stage1", "stage2", "stage3", "stage4"]
    for key, value in features.items():
        assert value.shape[1] == -(-size // {"stem": 2, "stage1": 4, "stage2": 8, "stage3": 16}.get(key, 32))
        np.testing.assert_allclose(np.asarray(value), captured[key], atol=1e-4, rtol=1e-4, err_msg=key)


def test_name_map_covers_state_dict_exactly():
    for arch, (width, depth, _) in efficientnet.ARCHS.items():
        with torch.device("meta"):
            model = getattr(torchvision.models, arch)()
        torch_keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
        rows = efficientnet_name_map(width, depth)
        assert {key for key, _, _ in rows} == torch_keys, arch
        assert len({path for _, path, _ in rows}) == len(rows)


def test_torchvision_constants():
    """BN constants, stochastic depth and head dropout are torchvision's for B0-B3 (not B5-B7's 1e-3)."""
    for arch, (_, _, dropout) in efficientnet.ARCHS.items():
        with torch.device("meta"):
            model = getattr(torchvision.models, arch)()
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert {(m.eps, m.momentum) for m in bns} == {(1e-5, 0.1)}
        assert model.classifier[0].p == dropout == MODELS[arch].dropout_rate
        depths = [m.stochastic_depth.p for m in model.modules() if hasattr(m, "stochastic_depth")]
        blocks = efficientnet.block_specs(*efficientnet.ARCHS[arch][:2])
        assert depths == pytest.approx([0.2 * i / len(blocks) for i in range(len(blocks))])
    backbone = efficientnet.efficientnet_b0()
    assert (backbone.bn_momentum, backbone.bn_epsilon, backbone.stochastic_depth_rate) == (0.9, 1e-5, 0.2)


def test_stochastic_depth_drops_whole_residual_branches():
    """'row' mode on one residual MBConv: per example the branch is dropped (output == input) or kept and
    scaled by 1 / (1 - p); draws come from the 'dropout' rng, so a seed repeats them."""
    spec = efficientnet.BlockSpec(stage=2, index=1, kernel=3, stride=1, in_features=24, hidden=144,
                                  out_features=24)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 8, 8, 24)), jnp.float32)
    variables = efficientnet.MBConv(spec).init(jax.random.PRNGKey(0), x, train=False)

    def residual(rate, seed):
        y, _ = efficientnet.MBConv(spec, rate).apply(variables, x, train=True, mutable=["batch_stats"],
                                                     rngs={"dropout": jax.random.PRNGKey(seed)})
        return np.asarray(y - x)

    branch = residual(0.0, 0)
    dropped = residual(0.5, 0)
    kept = [bool(np.abs(d).max() > 0) for d in dropped]
    assert 0 < sum(kept) < len(kept)
    for d, k, b in zip(dropped, kept, branch):
        np.testing.assert_allclose(d, 2.0 * b if k else 0.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(residual(0.5, 0), dropped)
    assert not np.array_equal(residual(0.5, 1), dropped)
    np.testing.assert_array_equal(efficientnet.MBConv(spec, 0.5).apply(variables, x, train=False) - x,
                                  efficientnet.MBConv(spec, 0.0).apply(variables, x, train=False) - x)


@pytest.mark.parametrize("arch", list(efficientnet.ARCHS))
def test_pretrained_sources_are_torchvision_imagenet1k_v1(arch):
    assert store.PRETRAINED_SOURCES[arch].url == torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
    assert MODELS[arch].input_norm == "imagenet" and MODELS[arch].pretrained
