"""Keras-ported ResNet50 / DenseNet121 / InceptionV3 compute what keras.applications computes.

Each case builds the Keras model (``weights=None``, logits out) on the JAX backend with seeded random
weights and randomised BatchNorm statistics, saves it as a legacy ``.h5`` (the layout of Keras's ImageNet
and RadImageNet files, read with h5py alone), converts the file and compares flax logits with
``model(x, training=False)``; the live model and the Keras 3 layouts (``.keras``, ``.weights.h5``, read
through Keras) must convert to the same arrays.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from medtl_jax.models import NORMALIZATION, get_spec  # noqa: E402
from medtl_jax.models.layers.heads import Classifier  # noqa: E402
from medtl_jax.weights import keras_applications as ka  # noqa: E402

pytest.importorskip("h5py", reason="reading Keras files needs h5py (pip install 'medtl-jax[port]')")
keras = pytest.importorskip("keras", reason="the Keras reference needs keras 3 (pip install 'medtl-jax[port]')")
if keras.backend.backend() != "jax":
    pytest.skip(f"keras imported with the {keras.backend.backend()!r} backend; set KERAS_BACKEND=jax",
                allow_module_level=True)

FAST_COMPILE = {"xla_backend_optimization_level": 0}  # as in test_densenet_port: same ops, unfused
# keras.applications name -> (Keras constructor, medtl model name, converter, input side).
CASES = {
    "resnet50": ("ResNet50", "resnet50_keras", ka.convert_keras_resnet50, 64),
    "densenet121": ("DenseNet121", "densenet121_keras", ka.convert_keras_densenet121, 64),
    "inception_v3": ("InceptionV3", "inception_v3_keras", ka.convert_keras_inception_v3, 75),
}


def _randomise(model, seed: int = 0) -> None:
    """Seeded random weights of sensible scale; BatchNorm gamma/beta/moving stats all non-trivial."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            new = [rng.uniform(0.5, 1.5, w.shape) if i in (len(weights) - 1,) or (i == 0 and layer.scale)
                   else rng.normal(0, 0.1, w.shape) for i, w in enumerate(weights)]
        else:  # conv / dense: kernel ~ N(0, 1 / fan_in), bias ~ N(0, 0.1)
            new = [rng.normal(0, np.sqrt(1.0 / np.prod(w.shape[:-1])), w.shape) if w.ndim > 1
                   else rng.normal(0, 0.1, w.shape) for w in weights]
        layer.set_weights([w.astype(np.float32) for w in new])


@pytest.fixture(scope="module", params=list(CASES))
def ported(request, tmp_path_factory):
    """(case, Keras model, converted variables, path of the saved legacy .h5)."""
    keras.utils.clear_session()  # fresh automatic layer names (conv2d, conv2d_1, ...)
    constructor, _, converter, size = CASES[request.param]
    model = getattr(keras.applications, constructor)(weights=None, classifier_activation=None,
                                                     input_shape=(size, size, 3))
    _randomise(model)
    path = tmp_path_factory.mktemp(request.param) / "model.h5"
    model.save(str(path))  # legacy HDF5: model_weights/<layer>/<layer>/kernel, layer/weight_names attrs
    return request.param, model, converter(ka.read_keras_file(str(path))), path


def test_logits_and_parameter_count_match_keras(ported):
    case, model, variables, _ = ported
    _, name, _, size = CASES[case]
    x = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))

    flax_model = Classifier(get_spec(name).build_backbone(), 1000)
    # resnet50_keras takes RGB and flips it itself: Keras's model is fed the flipped (BGR) array.
    flax_input = x[..., ::-1] if case == "resnet50" else x
    logits = jax.jit(lambda v, x: flax_model.apply(v, x, train=False), compiler_options=FAST_COMPILE)(
        variables, jnp.asarray(flax_input))

    diff = float(np.max(np.abs(np.asarray(logits) - expected)))
    n_params = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    n_stats = sum(leaf.size for leaf in jax.tree.leaves(variables["batch_stats"]))
    # Keras counts moving statistics as (non-trainable) weights; InceptionV3 has no BN gamma, which the
    # flax model holds as a scale of ones.
    filled_scales = n_stats // 2 if case == "inception_v3" else 0
    print(f"{case}@{size}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(expected).max():.3f}); "
          f"{n_params} flax params + {n_stats} batch stats; keras count_params {model.count_params()}")
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    assert n_params + n_stats - filled_scales == model.count_params()


def test_live_model_and_other_file_layouts_convert_identically(ported, tmp_path):
    case, model, variables, _ = ported
    constructor, _, converter, _ = CASES[case]
    weights_h5 = tmp_path / "model.weights.h5"  # Keras 3: no layer names, read through keras
    model.save_weights(str(weights_h5))
    whole = tmp_path / "model.keras"  # Keras 3 zip with its architecture
    model.save(str(whole))
    with pytest.raises(ValueError, match="keeps no layer names"):
        ka.read_keras_file(str(weights_h5))
    for weights in (ka.from_keras_model(model), ka.read_keras_file(str(weights_h5), keras_app=constructor),
                    ka.read_keras_file(str(whole))):
        converted = converter(weights)
        assert jax.tree.structure(converted) == jax.tree.structure(variables)
        for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(variables)):
            np.testing.assert_array_equal(a, b)


def test_notop_file_converts_without_head(ported):
    case, _, variables, path = ported
    weights = ka.read_keras_file(str(path))
    del weights[ka.HEAD_LAYER]
    converted = CASES[case][2](weights)
    assert "head" not in converted["params"]
    assert converted["params"]["backbone"].keys() == variables["params"]["backbone"].keys()


def test_convert_rejects_wrong_architecture(ported):
    case, _, _, path = ported
    weights = ka.read_keras_file(str(path))
    other = "densenet121" if case != "densenet121" else "resnet50"
    with pytest.raises(ValueError, match="missing layers"):
        CASES[other][2](weights)


def test_port_cli_accepts_keras_source(ported, tmp_path):
    """``--source keras:NAME --file PATH`` converts, checks shapes against the model, writes msgpack."""
    from launch import port_weights
    case, _, _, path = ported
    summary = port_weights.port(f"keras:{case}", str(tmp_path), weights_file=str(path))
    assert summary.name == CASES[case][1] and summary.output.is_file()
    assert port_weights.resolve_source(f"keras:{case}")[0] == CASES[case][1]


def test_caffe_normalisation_plus_bgr_flip_is_keras_preprocess_input():
    """Pipeline (x / 255 - mean) / std with 'caffe', then the model's channel flip == Keras 'caffe'."""
    image = np.random.default_rng(2).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    mean, std = (np.asarray(v, np.float32) for v in NORMALIZATION["caffe"])
    ours = ((image / 255 - mean) / std)[..., ::-1]
    theirs = np.asarray(keras.applications.resnet.preprocess_input(image.copy()))
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    tf_mode = np.asarray(keras.applications.inception_v3.preprocess_input(image.copy()))
    mean, std = (np.asarray(v, np.float32) for v in NORMALIZATION[get_spec("inception_v3_keras").input_norm])
    np.testing.assert_allclose((image / 255 - mean) / std, tf_mode, atol=1e-5)
