"""Gray input through a folded stem, config.model.init as a store name or file, Inception's aux loss."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import serialization

from configs.base import base_config
from medtl_jax.weights import model_input
from medtl_jax.train import trainer as train
from medtl_jax.data.pipeline.batches import Preprocess, Transform, collate
from medtl_jax.models import build_classifier, get_spec
from medtl_jax.weights.init_source import load_init_variables
from medtl_jax.weights.store import load_pretrained


def _batch(images: np.ndarray, pre: Preprocess) -> np.ndarray:
    t = Transform(pre)
    return collate([t({"image": im, "label": 0}) for im in images])["image"]


def test_gray_input_to_folded_lite0_equals_three_copies():
    """One gray channel into the folded stem gives the logits of the RGB model fed three copies."""
    name, size = "efficientnet_lite0", 48
    spec = get_spec(name)
    gray = np.random.default_rng(0).integers(0, 256, (2, size, size, 1), dtype=np.uint8)
    rgb_pre = Preprocess(size, *model_input.input_normalization(spec, name, 3))
    gray_pre = Preprocess(size, *model_input.input_normalization(spec, name, 1))
    x3, x1 = _batch(gray, rgb_pre), _batch(gray, gray_pre)
    assert x3.shape[-1] == 3 and x1.shape[-1] == 1
    pretrained = load_pretrained(name)
    model = build_classifier(name, 1000)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    ref = apply(pretrained, x3)
    out = apply(model_input.fold_pretrained(pretrained, spec, name, 1), x1)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-4, rtol=1e-4)


def test_gray_input_to_folded_resnet_matches_inside_the_border():
    """ImageNet-normalised ResNet: the fold is exact where the stem never sees zero padding; on a
    constant image the stem output's interior must match exactly (module docstring of channels.py)."""
    name, size = "resnet18", 32
    spec = get_spec(name)
    gray = np.full((1, size, size, 1), 140, np.uint8)
    x3 = _batch(gray, Preprocess(size, *model_input.input_normalization(spec, name, 3)))
    x1 = _batch(gray, Preprocess(size, *model_input.input_normalization(spec, name, 1)))
    rng = np.random.default_rng(1)
    model = build_classifier(name, 3)
    v3 = jax.device_get(jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)),
                                                   train=False))())
    v3["batch_stats"] = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(a.dtype) ** 2, v3["batch_stats"])
    v1 = model_input.fold_pretrained(v3, spec, name, 1)
    stem = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True, mutable=[
        "intermediates"])[1]["intermediates"]["backbone"]["__call__"][0]["stem"])
    a, b = np.asarray(stem(v3, x3)), np.asarray(stem(v1, x1))
    np.testing.assert_allclose(b[:, 2:-2, 2:-2], a[:, 2:-2, 2:-2], atol=1e-4)
    assert not np.allclose(a, 0)


def test_in_channels_checks_name_the_config_key():
    with pytest.raises(ValueError, match="config.model.in_channels=1 needs gray"):
        model_input.check_in_channels("resnet18", 1, data_channels=3)
    with pytest.raises(ValueError, match="no stem to fold for 'cbr_small'"):
        model_input.check_in_channels("cbr_small", 1, data_channels=1)
    with pytest.raises(ValueError, match="not one of"):
        model_input.check_in_channels("resnet18", 2, data_channels=1)


def test_init_from_store_name_path_and_typo(tmp_path):
    variables = {"params": {"w": np.arange(3.0, dtype=np.float32)}, "batch_stats": {}}
    (tmp_path / "my_radimagenet.msgpack").write_bytes(serialization.msgpack_serialize(variables))
    by_name = load_init_variables("my_radimagenet", "resnet18", store_dir=str(tmp_path))
    by_path = load_init_variables(str(tmp_path / "my_radimagenet.msgpack"), "resnet18")
    np.testing.assert_array_equal(by_name["params"]["w"], variables["params"]["w"])
    np.testing.assert_array_equal(by_path["params"]["w"], variables["params"]["w"])
    assert load_init_variables("scratch", "resnet18") is None
    with pytest.raises(ValueError, match=r"config.model.init='my_radimagnet'.*Did you mean 'my_radimagenet'"):
        load_init_variables("my_radimagnet", "resnet18", store_dir=str(tmp_path))
    (tmp_path / "broken.msgpack").write_bytes(b"not msgpack")
    with pytest.raises(ValueError, match="broken.msgpack"):
        load_init_variables("broken", "resnet18", store_dir=str(tmp_path))


def test_trainer_gray_input_with_store_init(tmp_path):
    """A run with in_channels=1 and init = a store entry trains; its stem kernel has one input channel and
    starts from the folded stored weights."""
    name = "efficientnet_lite0"
    (tmp_path / "lite0_copy.msgpack").write_bytes(serialization.msgpack_serialize(load_pretrained(name)))
    c = base_config()
    c.data.name, c.data.subset, c.data.data_dir, c.data.input_size = "synthetic", "tiny", str(tmp_path / "tfds"), 32
    c.model.name, c.model.init, c.model.weights_dir, c.model.in_channels = name, "lite0_copy", str(tmp_path), 1
    c.train.batch_size, c.train.eval_batch_size = 16, 32
    s = train.make_setup(c)
    state = jax.device_get(train.create_state(c, s))
    kernel = state.params["backbone"]["conv_stem"]["kernel"]
    expected = model_input.fold_pretrained(load_pretrained(name), get_spec(name), name, 1)
    assert kernel.shape[2] == 1
    np.testing.assert_array_equal(kernel, expected["params"]["backbone"]["conv_stem"]["kernel"])


def test_inception_aux_logits_are_captured_for_the_loss():
    """The trainer's aux loss reads the backbone's 'aux_logits' output; it exists, sized to the task."""
    model = build_classifier("inception_v3", 2, **model_input.backbone_kwargs("inception_v3", 3, aux_outputs=2))
    x = jnp.zeros((1, 299, 299, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    logits, state = jax.eval_shape(lambda v: model.apply(
        v, x, train=True, mutable=["batch_stats", "intermediates"], rngs={"dropout": jax.random.PRNGKey(1)},
        capture_intermediates=lambda mdl, _: mdl.name == "backbone"), variables)
    aux = state["intermediates"]["backbone"]["__call__"][0]["aux_logits"]
    assert logits.shape == (1, 2) and aux.shape == (1, 1, 1, 2)
    with pytest.raises(ValueError, match="aux_loss_weight > 0 needs an Inception-V3"):
        model_input.backbone_kwargs("resnet18", 3, aux_outputs=2)
