"""Ported torchvision DenseNets compute what torchvision computes (logits and block features), from
state dicts in either key style (current ``norm1`` or the published files' legacy ``norm.1``)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.models import densenet
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.weights import store
from medtl_jax.weights.torchvision_densenet import convert_densenet, densenet_name_map, uses_legacy_keys

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from tests.helpers.torch_reference import random_torch_model  # noqa: E402

# DenseNet-169/201 run at 32x32 (their last block then sees 1x1 maps) to keep the suite quick.
CASES = [("densenet121", 64), ("densenet169", 32), ("densenet201", 32)]
# XLA:CPU at -O0 compiles these 100-400-layer graphs ~3x faster (DenseNet-201: 8 s -> 3 s); the same
# ops run, only unfused, so the comparison with torch is unchanged.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

# torchvision's loader turns 'denselayer1.norm.1.weight' into 'denselayer1.norm1.weight' (LEGACY_PART ->
# r"\1\2."); CURRENT_PART -> r"\1.\2." undoes that, giving the published files' key style.
CURRENT_PART = re.compile(r"(denselayer\d+\.(?:norm|conv))([12])\.")
LEGACY_PART = re.compile(r"(denselayer\d+\.(?:norm|conv))\.([12])\.")


def _torch_to_numpy(state_dict) -> dict:
    return {k: v.detach().numpy() for k, v in state_dict.items()}


def _nhwc(x) -> jnp.ndarray:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def densenet121_ported():
    """A random torchvision DenseNet-121 and its converted flax variables, shared by several tests."""
    model = random_torch_model(torchvision.models.densenet121)
    return model, convert_densenet(_torch_to_numpy(model.state_dict()), "densenet121")


def _torch_block_features(model, x) -> dict:
    """torchvision DenseNet's 'stem', dense-block outputs and final norm5 + ReLU, via forward hooks."""
    captured = {}

    def capture(key):
        def hook(module, inputs, output):
            captured[key] = output.detach().clone().numpy()  # clone: torchvision's ReLUs are in-place
        return hook

    handles = [model.features.relu0.register_forward_hook(capture("stem"))]
    for i in range(1, 4):
        block = getattr(model.features, f"denseblock{i}")
        handles.append(block.register_forward_hook(capture(f"stage{i}")))
    handles.append(model.features.register_forward_hook(capture("norm5")))  # forward adds the ReLU
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    captured["stage4"] = np.maximum(captured.pop("norm5"), 0.0)
    return captured


@pytest.mark.parametrize("arch,size", CASES)
def test_logits_match_torchvision(arch, size, densenet121_ported):
    """Logits (and for DenseNet-121 every block's features, from the same compiled forward)."""
    if arch == "densenet121":
        model, variables = densenet121_ported
    else:
        model = random_torch_model(getattr(torchvision.models, arch))
        variables = convert_densenet(_torch_to_numpy(model.state_dict()), arch)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()

    classifier = Classifier(getattr(densenet, arch)(), 1000)

    def forward(v, x):
        logits, state = classifier.apply(v, x, train=False, mutable=["intermediates"],
                                         capture_intermediates=lambda mdl, _: mdl.name == "backbone")
        return logits, state["intermediates"]["backbone"]["__call__"][0]

    logits, features = jax.jit(forward, compiler_options=FAST_COMPILE)(variables, _nhwc(x))

    assert logits.dtype == jnp.float32 and logits.shape == (2, 1000)
    diff = float(np.max(np.abs(np.asarray(logits) - expected)))
    n_flax = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    n_torch = sum(p.numel() for p in model.parameters())
    print(f"{arch}@{size}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(expected).max():.3f}); "
          f"{n_flax} parameters")
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    assert n_flax == n_torch

    if arch == "densenet121":
        assert list(features) == ["stem", "stage1", "stage2", "stage3", "stage4"]
        assert [f.shape[1:] for f in features.values()] == [
            (32, 32, 64), (16, 16, 256), (8, 8, 512), (4, 4, 1024), (2, 2, 1024)]
        captured = _torch_block_features(model, x)
        for key, value in features.items():
            np.testing.assert_allclose(np.asarray(value), captured[key].transpose(0, 2, 3, 1),
                                       atol=1e-4, rtol=0, err_msg=key)


def test_legacy_keys_convert_identically(densenet121_ported):
    model, variables = densenet121_ported
    state_dict = _torch_to_numpy(model.state_dict())
    legacy = {CURRENT_PART.sub(r"\1.\2.", k): v for k, v in state_dict.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert "features.denseblock4.denselayer16.conv.2.weight" in legacy
    assert uses_legacy_keys(legacy) and not uses_legacy_keys(state_dict)

    converted = convert_densenet(legacy, "densenet121")
    assert jax.tree.structure(converted) == jax.tree.structure(variables)
    flat, flat_legacy = jax.tree.leaves_with_path(variables), jax.tree.leaves_with_path(converted)
    assert [p for p, _ in flat] == [p for p, _ in flat_legacy]
    for (path, a), (_, b) in zip(flat, flat_legacy):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))

    mixed = dict(legacy)
    mixed["features.denseblock1.denselayer1.norm1.weight"] = mixed.pop(
        "features.denseblock1.denselayer1.norm.1.weight")
    with pytest.raises(ValueError, match=r"unused torch keys \[features\.denseblock1\.denselayer1\.norm1"):
        convert_densenet(mixed, "densenet121")


def test_name_map_covers_state_dict_exactly():
    with torch.device("meta"):
        model = torchvision.models.densenet169()
    torch_keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    for legacy in (False, True):
        rows = densenet_name_map(densenet.ARCHS["densenet169"], legacy=legacy)
        keys = {key for key, _, _ in rows}
        assert uses_legacy_keys(dict.fromkeys(keys)) == legacy
        assert {LEGACY_PART.sub(r"\1\2.", k) for k in keys} == torch_keys
        assert len({path for _, path, _ in rows}) == len(rows)


def test_convert_rejects_wrong_arch(densenet121_ported):
    model, _ = densenet121_ported
    with pytest.raises(ValueError, match=r"missing torch keys \[features\.denseblock3\.denselayer25"):
        convert_densenet(_torch_to_numpy(model.state_dict()), "densenet169")


@pytest.mark.parametrize("arch", [a for a, _ in CASES])
def test_pretrained_sources_are_torchvision_imagenet1k_v1(arch):
    assert store.PRETRAINED_SOURCES[arch].url == torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url


def test_load_pretrained_reads_a_legacy_style_pth(densenet121_ported, tmp_path):
    """What a user does with the published file: ``weights_file=`` a .pth in the legacy key style."""
    model, variables = densenet121_ported
    legacy = {CURRENT_PART.sub(r"\1.\2.", k): v for k, v in model.state_dict().items()}
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(legacy, path)
    loaded = store.load_pretrained("densenet121", weights_file=str(path), store_dir=str(tmp_path))
    assert jax.tree.structure(loaded) == jax.tree.structure(variables)
    for (path_a, a), (_, b) in zip(jax.tree.leaves_with_path(variables), jax.tree.leaves_with_path(loaded)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path_a))
