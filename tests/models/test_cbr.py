"""The Transfusion CBR nets: stage shapes, the same parameters and outputs as a torch net written from the
paper's description, and the classifier learns."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medtl_jax.models import MODELS, build_classifier, cbr
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.weights import apply_name_map, bn_rows, conv_rows

torch = pytest.importorskip("torch")

ARCHS = ["cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny"]


def _torch_reference(widths, kernel, num_classes):
    """Raghu et al. 2019 as written: per block conv(k x k)-BN-ReLU then 3x3/2 max-pool; global average
    pool; dense layer. Padding k//2 and pool padding 1 are our reading (the paper does not say)."""
    layers, in_channels = [], 3
    for width in widths:
        layers += [torch.nn.Conv2d(in_channels, width, kernel, padding=kernel // 2, bias=False),
                   torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                   torch.nn.MaxPool2d(3, stride=2, padding=1)]
        in_channels = width
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(in_channels, num_classes)]
    return torch.nn.Sequential(*layers)


def _reference_name_map(num_blocks):
    """Sequential positions of the reference -> flax paths of ``Classifier(CBR(...), n)``."""
    rows = []
    for i in range(num_blocks):
        rows += conv_rows(f"{4 * i}", ("backbone", f"conv{i + 1}"))
        rows += bn_rows(f"{4 * i + 1}", ("backbone", f"bn{i + 1}"))
    head = 4 * num_blocks + 2
    rows += [(f"{head}.weight", ("params", "head", "kernel"), "dense"),
             (f"{head}.bias", ("params", "head", "bias"), "copy")]
    return rows


@pytest.mark.parametrize("size", [224, 64])
@pytest.mark.parametrize("arch", ARCHS)
def test_stage_shapes(arch, size):
    widths, _ = cbr.ARCHS[arch]
    backbone = getattr(cbr, arch)()
    x = jnp.zeros((2, size, size, 3))
    features = jax.eval_shape(lambda: backbone.init_with_output(jax.random.key(0), x, train=False)[0])
    expected = {f"stage{i + 1}": (2, -(-size // 2 ** (i + 1)), -(-size // 2 ** (i + 1)), w)
                for i, w in enumerate(widths)}
    assert {k: v.shape for k, v in features.items()} == expected
    assert list(features) == list(expected)
    if size == 224:  # strides 2, 4, 8, 16[, 32]: 224 -> 112, 56, 28, 14[, 7]
        assert features[f"stage{len(widths)}"].shape[1] == (7 if len(widths) == 5 else 14)


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_equals_torch_reference(arch):
    widths, kernel = cbr.ARCHS[arch]
    reference = _torch_reference(widths, kernel, num_classes=2)
    shapes = jax.eval_shape(lambda: build_classifier(arch, 2).init(
        jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    n_flax = sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))
    n_torch = sum(p.numel() for p in reference.parameters())
    print(f"{arch}: {n_flax} parameters (2-class head)")
    assert n_flax == n_torch
    spec = MODELS[arch]
    assert not spec.pretrained and spec.input_norm == "imagenet" and spec.default_input_size == 224


@pytest.mark.parametrize("arch", ["cbr_larget", "cbr_tiny"])  # 7x7 five blocks; 5x5 four blocks
def test_outputs_equal_torch_reference(arch):
    widths, kernel = cbr.ARCHS[arch]
    torch.manual_seed(0)
    reference = _torch_reference(widths, kernel, num_classes=3)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    reference.eval()
    x = torch.randn(2, 3, 45, 45, generator=torch.Generator().manual_seed(1))  # odd sides: ceil halving
    with torch.no_grad():
        expected = reference(x).numpy()
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
    variables = apply_name_map(state_dict, _reference_name_map(len(widths)), arch)
    classifier = Classifier(getattr(cbr, arch)(), 3)
    logits = jax.jit(lambda v, x: classifier.apply(v, x, train=False))(
        variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)


def test_classifier_trains_on_a_fixed_batch():
    """Plain SGD on one random batch drives the loss down. At 64x64 every 7x7 conv sees a map at least
    8x8 (smaller maps hit XLA:CPU's slow path); -O0 compiles ~2x faster and is plenty for a few steps."""
    fast_compile = {"xla_backend_optimization_level": 0}
    classifier = build_classifier("cbr_small", 2)
    x = jax.random.normal(jax.random.key(0), (4, 64, 64, 3))
    labels = jnp.array([0, 1, 0, 1])
    variables = jax.jit(lambda: classifier.init(jax.random.key(1), x, train=False),
                        compiler_options=fast_compile)()
    tx = optax.sgd(0.01)

    def loss_fn(params, batch_stats):
        logits, updates = classifier.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                           mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates["batch_stats"]

    @functools.partial(jax.jit, compiler_options=fast_compile)
    def step(params, batch_stats, opt_state):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    losses = []
    for _ in range(5):
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
        losses.append(float(loss))
    print("cbr_small losses:", [f"{v:.3f}" for v in losses])
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
    before, after = variables["batch_stats"]["backbone"]["bn1"], batch_stats["backbone"]["bn1"]
    assert not np.allclose(after["mean"], before["mean"])  # train mode updates the running statistics
