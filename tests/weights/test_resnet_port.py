"""Ported torchvision ResNets compute what torchvision computes (logits and per-stage features)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.models import build_classifier, resnet
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.weights.torchvision_resnet import convert_resnet, resnet_name_map

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

ARCHS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def _random_torch_resnet(arch: str):
    """torchvision model in eval mode with random weights AND random BatchNorm statistics/affines.

    The BN that closes each residual branch gets a small scale (0.1-0.3) so the residual stream stays
    O(1) through 50 blocks; otherwise ResNet-152 logits reach the hundreds and float32 rounding alone
    exceeds the 1e-4 tolerance.
    """
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)()
    last_bn = "bn2" if arch in ("resnet18", "resnet34") else "bn3"
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                low, high = (0.1, 0.3) if name.endswith(last_bn) else (0.5, 1.5)
                module.weight.uniform_(low, high)
    return model.eval()


def _torch_to_numpy(state_dict) -> dict:
    return {k: v.detach().numpy() for k, v in state_dict.items()}


def _nhwc(x) -> jnp.ndarray:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_torchvision(arch):
    model = _random_torch_resnet(arch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()

    variables = convert_resnet(_torch_to_numpy(model.state_dict()), arch)
    classifier = Classifier(getattr(resnet, arch)(), 1000)
    logits = jax.jit(lambda v, x: classifier.apply(v, x, train=False))(variables, _nhwc(x))

    assert logits.dtype == jnp.float32 and logits.shape == (2, 1000)
    diff = float(np.max(np.abs(np.asarray(logits) - expected)))
    print(f"{arch}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(expected).max():.2f})")
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    n_flax = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    n_torch = sum(p.numel() for p in model.parameters())
    print(f"{arch}: {n_flax} parameters")
    assert n_flax == n_torch


def test_stage_features_match_torch_hooks():
    model = _random_torch_resnet("resnet50")
    captured = {}

    def capture(key):
        def hook(module, inputs, output):
            captured[key] = output.detach().clone().numpy()  # hooks must return None
        return hook

    model.relu.register_forward_hook(capture("stem"))  # torchvision's stem ReLU, before the max-pool
    for i in range(1, 5):
        getattr(model, f"layer{i}").register_forward_hook(capture(f"stage{i}"))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model(x)

    variables = convert_resnet(_torch_to_numpy(model.state_dict()), "resnet50")
    backbone_vars = {col: tree["backbone"] for col, tree in variables.items()}
    features = jax.jit(lambda v, x: resnet.resnet50().apply(v, x, train=False))(backbone_vars, _nhwc(x))

    assert list(features) == ["stem", "stage1", "stage2", "stage3", "stage4"]
    for key, value in features.items():
        np.testing.assert_allclose(np.asarray(value), captured[key].transpose(0, 2, 3, 1),
                                   atol=1e-4, rtol=0, err_msg=key)


def test_name_map_covers_state_dict_exactly():
    model = torchvision.models.resnet50()
    rows = resnet_name_map(*resnet.ARCHS["resnet50"])
    torch_keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert {key for key, _, _ in rows} == torch_keys
    assert len({path for _, path, _ in rows}) == len(rows)


def test_convert_rejects_wrong_arch():
    state_dict = _torch_to_numpy(torchvision.models.resnet18().state_dict())
    with pytest.raises(ValueError, match=r"missing torch keys \[layer1\.2\.conv1\.weight"):
        convert_resnet(state_dict, "resnet34")
    state_dict["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match="unused torch keys.*extra.weight"):
        convert_resnet(state_dict, "resnet18")


def test_cifar_stem_shapes_at_28():
    """The MedMNIST stem keeps 28x28 at stride 1: stages at 28, 14, 7, 4 (ceil of 7/2 with pad 1)."""
    backbone = resnet.resnet18(stem="cifar")
    x = jnp.zeros((2, 28, 28, 3))
    variables = jax.eval_shape(lambda: backbone.init(jax.random.key(0), x, train=False))
    assert variables["params"]["conv1"]["kernel"].shape == (3, 3, 3, 64)
    features = jax.eval_shape(lambda v: backbone.apply(v, x, train=False), variables)
    shapes = {k: v.shape for k, v in features.items()}
    assert shapes == {"stem": (2, 28, 28, 64), "stage1": (2, 28, 28, 64), "stage2": (2, 14, 14, 128),
                      "stage3": (2, 7, 7, 256), "stage4": (2, 4, 4, 512)}

    classifier = build_classifier("resnet50", 2, stem="cifar")
    logits = jax.eval_shape(
        lambda: classifier.init_with_output(jax.random.key(0), x, train=False)[0])
    assert logits.shape == (2, 2)


def test_imagenet_stem_shapes_and_train_mode():
    x = jnp.ones((2, 64, 64, 3))
    variables = jax.eval_shape(
        lambda: build_classifier("resnet18", 3).init(jax.random.key(0), x, train=False))
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]) == {"backbone", "head"}
    assert variables["params"]["head"]["kernel"].shape == (512, 3)
    features = jax.eval_shape(lambda v: resnet.resnet18().apply(
        {c: t["backbone"] for c, t in v.items()}, x, train=False), variables)
    assert {k: v.shape[1:] for k, v in features.items()} == {
        "stem": (32, 32, 64), "stage1": (16, 16, 64), "stage2": (8, 8, 128), "stage3": (4, 4, 256),
        "stage4": (2, 2, 512)}

    # Train mode updates the running statistics (a one-block-per-stage net keeps this quick).
    classifier = Classifier(resnet.ResNet((1, 1, 1, 1), "basic"), 3)
    variables = jax.jit(lambda: classifier.init(jax.random.key(0), x, train=False))()
    logits, updates = jax.jit(lambda v: classifier.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables)
    assert logits.shape == (2, 3)
    before = variables["batch_stats"]["backbone"]["bn1"]["mean"]
    assert not np.allclose(updates["batch_stats"]["backbone"]["bn1"]["mean"], before)


def test_bfloat16_compute_keeps_float32_params():
    classifier = build_classifier("resnet18", 2, dtype=jnp.bfloat16)
    x = jnp.ones((1, 32, 32, 3))
    variables = jax.eval_shape(lambda: classifier.init(jax.random.key(0), x, train=False))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    logits = jax.eval_shape(lambda v: classifier.apply(v, x, train=False), variables)
    assert logits.dtype == jnp.float32


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="resnet50"):
        build_classifier("resnet05", 2)
    with pytest.raises(ValueError, match="no stem 'cifar'"):
        build_classifier("efficientnet_lite0", 2, stem="cifar")
