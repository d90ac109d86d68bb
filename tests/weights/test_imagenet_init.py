"""`config.model.init='imagenet'` loads the ported backbone under a fresh head (and a fresh CIFAR stem)."""

import jax
import numpy as np
import pytest
import torch
import torchvision

from medtl_jax.train import trainer as train
from medtl_jax.weights.store import load_pretrained
from tests.helpers.tiny_recipe import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _leaf(tree, path):
    for key in path.split("/"):
        tree = tree[key]
    return np.asarray(tree)


def test_resnet18_from_a_local_torchvision_file_with_cifar_stem(data_dir, tmp_path):
    torch.manual_seed(0)
    weights_file = tmp_path / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights_file)
    config = tiny_config(data_dir, **{"model.init": "imagenet", "model.weights_file": str(weights_file)})
    s = train.make_setup(config)
    state = jax.device_get(train.create_state(config, s))
    pretrained = load_pretrained("resnet18", weights_file=str(weights_file))
    scratch_config = tiny_config(data_dir)
    scratch = jax.device_get(train.create_state(scratch_config, train.make_setup(scratch_config)))

    for path in ("backbone/layer1_0/conv1/kernel", "backbone/layer4_1/bn2/scale", "backbone/bn1/bias"):
        np.testing.assert_array_equal(_leaf(state.params, path), _leaf(pretrained["params"], path))
    np.testing.assert_array_equal(_leaf(state.batch_stats, "backbone/layer3_0/bn1/mean"),
                                  _leaf(pretrained["batch_stats"], "backbone/layer3_0/bn1/mean"))
    # The head (1 output instead of 1000) and the 3x3 CIFAR stem conv (instead of 7x7) stay fresh.
    assert _leaf(state.params, "head/kernel").shape == (512, 1)
    np.testing.assert_array_equal(_leaf(state.params, "head/kernel"), _leaf(scratch.params, "head/kernel"))
    assert _leaf(state.params, "backbone/conv1/kernel").shape == (3, 3, 3, 64)
    np.testing.assert_array_equal(_leaf(state.params, "backbone/conv1/kernel"),
                                  _leaf(scratch.params, "backbone/conv1/kernel"))


def test_weights_of_another_architecture_fail_with_a_diff(data_dir, tmp_path):
    weights_file = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), weights_file)
    config = tiny_config(data_dir, **{"model.init": "imagenet", "model.weights_file": str(weights_file)})
    with pytest.raises(ValueError, match=r"resnet34.pth: .*does not fit resnet18.*unused torch keys \[layer1.2.conv1"):
        train.create_state(config, train.make_setup(config))
