"""Datasets without a test split (documented as allowed) train to the end and report validation, said so;
results files are strict JSON whatever the metrics hold."""

import json

import numpy as np
import PIL.Image
import pytest

from launch.train import summary_line
from medtl_jax.train import trainer as train
from medtl_jax.runtime.atomic_io import write_json_atomic
from medtl_jax.tasks.base import NO_TEST_SPLIT
from medtl_jax.data.ingest.prepare_custom import PrepareOptions, prepare_custom
from medtl_jax.runtime.metric_log import MetricLog
from tests.helpers.segmentation_folders import write_seg_folder
from tests.helpers.tiny_recipe import tiny_config

_FAST = {"model.name": "cbr_tiny", "model.stem": "imagenet", "train.epochs": 1, "train.batch_size": 8,
         "train.eval_batch_size": 8}


def _class_folder(root, per_class=24, size=16):
    rng = np.random.default_rng(0)
    for label, mean in (("normal", 60), ("lesion", 160)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = rng.normal(mean, 20, (size, size)).clip(0, 255).astype(np.uint8)
            PIL.Image.fromarray(image).save(root / label / f"{i}.png")


def test_custom_dataset_without_test_split_reports_validation(tmp_path):
    """Before: trained to the end, then 'need at least one array to concatenate'."""
    _class_folder(tmp_path / "images")
    prepare_custom(PrepareOptions(source=str(tmp_path / "images"), name="notest", data_dir=str(tmp_path / "tfds"),
                                  val_fraction=0.25, test_fraction=0.0))
    config = tiny_config(str(tmp_path / "tfds"), **_FAST, **{"data.name": "custom", "data.subset": "notest"})
    results = train.train_and_evaluate(config, tmp_path / "run")
    assert results["test"] == {"num_examples": 0, "note": NO_TEST_SPLIT}
    assert results["val"]["num_examples"] == 12 and 0 <= results["val"]["auc"] <= 1
    assert summary_line(results, "run").startswith("no test split; validation AUC")
    assert NO_TEST_SPLIT in (tmp_path / "run" / "report.md").read_text()
    assert not (tmp_path / "run" / "predictions_test.npz").exists()
    json.loads((tmp_path / "run" / "results.json").read_text(), parse_constant=_reject)


def test_segmentation_folders_without_test_folder_report_validation(tmp_path):
    """Before: results.json was written, then launch.train crashed with KeyError: 'auc'."""
    write_seg_folder(tmp_path / "seg", counts=(6, 2, 0))
    (tmp_path / "seg" / "test" / "images").rmdir()
    (tmp_path / "seg" / "test" / "masks").rmdir()
    (tmp_path / "seg" / "test").rmdir()
    config = tiny_config(str(tmp_path / "tfds"), **_FAST, **{"data.name": "seg_folders",
                                                              "data.manual_dir": str(tmp_path / "seg")})
    config.segmentation.patch_size, config.segmentation.patches_per_image = 32, 4
    results = train.train_and_evaluate(config, tmp_path / "run")
    assert results["test"]["num_images"] == 0 and results["val"]["num_images"] == 2
    assert summary_line(results, "run").startswith("no test split; validation Dice")
    assert NO_TEST_SPLIT in (tmp_path / "run" / "report.md").read_text()


def test_empty_validation_split_is_refused_before_training(tmp_path):
    _class_folder(tmp_path / "images", per_class=8)
    prepare_custom(PrepareOptions(source=str(tmp_path / "images"), name="noval", data_dir=str(tmp_path / "tfds"),
                                  val_fraction=0.0, test_fraction=0.25))
    config = tiny_config(str(tmp_path / "tfds"), **_FAST, **{"data.name": "custom", "data.subset": "noval"})
    with pytest.raises(ValueError, match="validation split .* is empty"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _reject(token):
    raise ValueError(f"non-standard JSON token {token}")


def test_results_and_metric_logs_are_strict_json(tmp_path):
    """json.dumps writes NaN/Infinity as bare tokens that strict parsers reject; they become null."""
    write_json_atomic(tmp_path / "r.json", {"best": float("-inf"), "auc": float("nan"), "x": [1.0, float("inf")]})
    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=_reject) == \
        {"best": None, "auc": None, "x": [1.0, None]}
    log = MetricLog(tmp_path)
    log.write(1, "val", {"auc": float("nan"), "loss": 0.5})
    log.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=_reject)["auc"] is None
