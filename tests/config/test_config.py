"""Config files, command-line overrides and the errors a typo produces."""

import subprocess
import sys

import ml_collections
import pytest

from configs import default as default_config
from configs import medmnist as medmnist_config
from configs.base import base_config
from medtl_jax.config.validate import flat_keys, unknown_field_message, validate_config
from tests.helpers.paths import REPO_ROOT


def _launch(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_every_config_is_valid():
    validate_config(default_config.get_config())
    validate_config(default_config.get_config("scratch"))
    for arg in ("dataset=retinamnist,model=resnet50,init=imagenet,size=224",
                "dataset=pneumoniamnist,model=efficientnet_lite0,init=imagenet,size=128,recipe=transfer"):
        validate_config(medmnist_config.get_config(arg))


def test_medmnist_config_reproduces_the_paper_recipe():
    c = medmnist_config.get_config("dataset=retinamnist,model=resnet18,size=28")
    assert (c.optimizer.name, c.optimizer.lr, c.train.batch_size, c.train.epochs) == ("adam", 1e-3, 128, 100)
    assert (c.schedule.name, tuple(c.schedule.milestones_epochs), c.schedule.decay_factor) == ("multistep", (50, 75), 0.1)
    assert c.model.stem == "cifar" and c.augment.enabled is False and c.data.subset == "retinamnist"
    assert medmnist_config.get_config("size=224").model.stem == "imagenet"


def test_config_file_argument_typo_names_valid_keys():
    with pytest.raises(ValueError, match="unknown config argument 'dataste'.*dataset"):
        medmnist_config.get_config("dataste=retinamnist")


def test_unknown_field_message_suggests_closest():
    msg = unknown_field_message(base_config(), "optimizer.lrr")
    assert "config.optimizer.lrr" in msg and "config.optimizer.lr" in msg
    assert "config.train.epochs" in unknown_field_message(base_config(), "train.epoch")
    assert "optimizer.lr" in flat_keys(base_config())


@pytest.mark.parametrize("key,value,match", [
    ("model.name", "resnet51", "config.model.name='resnet51'.*resnet50"),
    ("model.init", "imagnet", "config.model.init.*imagenet"),
    ("data.name", "medmnis", "config.data.name.*medmnist"),
    ("train.batch_size", 0, r"config.train.batch_size=0 is out of range: it must lie in \[1, "),
    ("model.stem", "cifar", "config.model.stem='cifar' is not available for config.model.name='efficientnet_lite0'"),
    ("segmentation.intensity", "clahe_green", "config.segmentation.intensity='clahe_green'.*green_clahe"),
    ("segmentation.fov_diameter", -2, r"config.segmentation.fov_diameter=-2 is out of range"),
])
def test_validate_config_names_the_bad_field(key, value, match):
    c = base_config()
    group, name = key.split(".")
    c[group][name] = value
    with pytest.raises(ValueError, match=match):
        validate_config(c)


def test_a_run_recorded_before_newer_fields_existed_still_validates():
    c = base_config().to_dict()
    for group, name in (("segmentation", "fov_diameter"), ("segmentation", "intensity"), ("train", "ema_decay")):
        del c[group][name]  # config.json of a run from an older version
    validate_config(ml_collections.ConfigDict(c))
    c["train"]["patience"] = -1  # fields it does have are still checked
    with pytest.raises(ValueError, match="config.train.patience=-1"):
        validate_config(ml_collections.ConfigDict(c))


def test_command_line_override_typo_fails_at_once(tmp_path):
    proc = _launch("--config", "configs/default.py", "--workdir", str(tmp_path), "--config.optimizer.lrr=0.01")
    assert proc.returncode != 0
    assert "unknown config field 'config.optimizer.lrr'; did you mean config.optimizer.lr?" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_command_line_override_of_a_wrong_type_fails(tmp_path):
    proc = _launch("--config", "configs/default.py", "--workdir", str(tmp_path), "--config.train.epochs=abc")
    assert proc.returncode != 0 and "epochs" in proc.stderr
