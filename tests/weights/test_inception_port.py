"""Ported torchvision Inception-V3 computes what torchvision computes: logits with and without
``transform_input``, block features, and the auxiliary classifier."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.models import MODELS, build_classifier, inception
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.weights import store
from medtl_jax.weights.torchvision_inception import (aux_key_names, convert_inception, inception_name_map,
                                                     skipped_keys)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from tests.helpers.torch_reference import random_torch_model  # noqa: E402

FAST_COMPILE = {"xla_backend_optimization_level": 0}
# torchvision's num_params (with AuxLogits) and the AuxLogits' share (conv0 + conv1 + fc, BN included).
PARAMS_WITH_AUX = 27_161_264
AUX_PARAMS = 3_326_696


@pytest.fixture(scope="module")
def ported():
    """A random torchvision Inception-V3 (with AuxLogits) and its numpy state dict."""
    model = random_torch_model(functools.partial(torchvision.models.inception_v3, init_weights=False,
                                                 aux_logits=True, transform_input=True))
    return model, {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _nhwc(x) -> jnp.ndarray:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("transform_input,size", [(True, 75), (False, 107)])
def test_logits_match_torchvision(ported, transform_input, size):
    """75 px is torchvision's min_size (Mixed_7c is 1x1); 107 px gives 2x2 at Mixed_7c."""
    model, state_dict = ported
    model.transform_input = transform_input
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    captured = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda mod, inp, out, key=key: captured.__setitem__(key, out.detach().numpy().transpose(0, 2, 3, 1)))
        for key, name in (("stem", "Conv2d_4a_3x3"), ("stage1", "Mixed_5d"), ("stage2", "Mixed_6e"),
                          ("stage3", "Mixed_7c"))]
    with torch.no_grad():
        expected = model(x).numpy()
    for hook in hooks:
        hook.remove()

    variables = convert_inception(state_dict)
    classifier = Classifier(inception.inception_v3(transform_input=transform_input), 1000)

    def forward(v, x):
        logits, state = classifier.apply(v, x, train=False, mutable=["intermediates"],
                                         capture_intermediates=lambda mdl, _: mdl.name == "backbone")
        return logits, state["intermediates"]["backbone"]["__call__"][0]

    logits, features = jax.jit(forward, compiler_options=FAST_COMPILE)(variables, _nhwc(x))
    diff = float(np.max(np.abs(np.asarray(logits) - expected)))
    n_params = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    print(f"inception_v3@{size} transform_input={transform_input}: max |logit diff| = {diff:.2e} "
          f"(max |logit| {np.abs(expected).max():.3f}); {n_params} parameters")
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    assert n_params == PARAMS_WITH_AUX - AUX_PARAMS
    assert list(features) == ["stem", "stage1", "stage2", "stage3"]
    for key, value in features.items():
        np.testing.assert_allclose(np.asarray(value), captured[key], atol=1e-4, rtol=1e-4, err_msg=key)


def test_transform_input_is_torchvisions(ported):
    """The pretrained default re-normalises ImageNet input to (p - 0.5) / 0.5, as torchvision's."""
    model, _ = ported
    model.transform_input = True
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    expected = model._transform_input(x).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(inception.transform_input(_nhwc(x)), expected, atol=1e-6)
    pixels = np.random.default_rng(0).uniform(size=(1, 2, 2, 3)).astype(np.float32)
    mean, std = (np.asarray(v, np.float32) for v in (inception.IMAGENET_MEAN, inception.IMAGENET_STD))
    np.testing.assert_allclose(inception.transform_input((pixels - mean) / std), pixels * 2 - 1, atol=1e-6)
    assert inception.inception_v3().transform_input and MODELS["inception_v3"].input_norm == "imagenet"


def test_aux_classifier_matches_torchvision(ported):
    """torch runs AuxLogits only in train mode (BatchNorm on batch statistics), so compare the head itself
    in eval mode: torch's ``model.AuxLogits`` and flax's ``AuxLogits`` on the same 17x17x768 map (Mixed_6e
    at 299 px), with the converted aux weights."""
    model, state_dict = ported
    variables = convert_inception(state_dict, aux_logits=True)
    assert sum(leaf.size for leaf in jax.tree.leaves(variables["params"])) == PARAMS_WITH_AUX
    mixed_6e = torch.randn(2, 768, 17, 17, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.AuxLogits(mixed_6e).numpy()
    aux_vars = {c: variables[c]["backbone"]["AuxLogits"] for c in ("params", "batch_stats")}
    got = inception.InceptionAux(num_outputs=1000).apply(aux_vars, _nhwc(mixed_6e), train=False)
    assert got.shape == (2, 1, 1, 1000)
    diff = float(np.abs(np.asarray(got[:, 0, 0]) - expected).max())
    print(f"inception_v3 AuxLogits: max |logit diff| = {diff:.2e} (max |logit| {np.abs(expected).max():.3f})")
    np.testing.assert_allclose(np.asarray(got[:, 0, 0]), expected, atol=1e-4, rtol=0)


def test_aux_logits_in_the_feature_dict():
    """With aux_logits, train=True at 299 px adds 'aux_logits' before 'stage3' (the Classifier still
    pools 'stage3'); eval does not run it; too small an input says so. Shapes only: no compute."""
    backbone = inception.inception_v3(aux_logits=True, aux_num_outputs=7)
    x = jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: backbone.init(jax.random.PRNGKey(0), x, train=False), x)
    assert variables["params"]["AuxLogits"]["fc"]["kernel"].shape == (768, 7)

    def features(train, x):
        return jax.eval_shape(lambda v, x: backbone.apply(v, x, train=train, mutable=["batch_stats"])[0],
                              variables, x)

    train = features(True, x)
    assert list(train) == ["stem", "stage1", "stage2", "aux_logits", "stage3"]
    assert train["aux_logits"].shape == (2, 1, 1, 7) and train["stage3"].shape == (2, 8, 8, 2048)
    assert [f.shape[1] for f in train.values()] == [71, 35, 17, 1, 8]
    assert list(features(False, x)) == ["stem", "stage1", "stage2", "stage3"]
    with pytest.raises(ValueError, match="at least 299 px"):
        features(True, jax.ShapeDtypeStruct((1, 298, 298, 3), jnp.float32))
    with pytest.raises(ValueError, match="at least 75x75"):
        features(False, jax.ShapeDtypeStruct((1, 74, 80, 3), jnp.float32))


def test_name_map_and_skipped_aux_keys(ported):
    _, state_dict = ported
    torch_keys = {k for k in state_dict if not k.endswith("num_batches_tracked")}
    aux = set(aux_key_names())
    assert {k for k in state_dict if k.startswith("AuxLogits.")} == aux
    assert {key for key, _, _ in inception_name_map(aux_logits=True)} == torch_keys
    assert {key for key, _, _ in inception_name_map()} == torch_keys - aux
    assert sorted(skipped_keys(state_dict)) == sorted(k for k in aux if not k.endswith("num_batches_tracked"))
    assert skipped_keys(state_dict, aux_logits=True) == []
    # A state dict without AuxLogits (torch model built with aux_logits=False) converts for the default
    # model, but not for one that asks for the aux head.
    no_aux = {k: v for k, v in state_dict.items() if k not in aux}
    convert_inception(no_aux)
    with pytest.raises(ValueError, match=r"missing torch keys \[AuxLogits\.conv0"):
        convert_inception(no_aux, aux_logits=True)
    with pytest.raises(ValueError, match=r"unused torch keys \[Mixed_5b\.extra"):
        convert_inception({**state_dict, "Mixed_5b.extra.weight": np.zeros(1)})


def test_registry_and_pretrained_source():
    assert store.PRETRAINED_SOURCES["inception_v3"].url == \
        torchvision.models.get_model_weights("inception_v3").IMAGENET1K_V1.url
    spec = MODELS["inception_v3"]
    assert (spec.default_input_size, spec.dropout_rate, spec.pretrained) == (299, 0.5, True)
    assert build_classifier("inception_v3", 2).backbone.aux_logits is False
