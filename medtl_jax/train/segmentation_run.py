"""The segmentation side of a run: U-Net/FCN over a backbone, patch epochs, sliding-window evaluation.

Training sees random `config.segmentation.patch_size` patches (`patches_per_image` per image per epoch,
a share of them centred on foreground pixels); evaluation predicts each whole validation/test image with
overlapping windows (`medtl_jax.tasks.segmentation.sliding_window`) and scores Dice, IoU and HD95 inside the dataset's field
of view (`medtl_jax.tasks.segmentation.metrics`). The selection metric defaults to validation Dice.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image

from medtl_jax.runtime import parallel
from medtl_jax.runtime.atomic_io import write_bytes_atomic
from medtl_jax.train.classification_run import NO_TEST_SPLIT, RunParts
from medtl_jax.config.validate import check_select_metric
from medtl_jax.data.pipeline.batches import as_iterator
from medtl_jax.data.pipeline.segmentation import SegAugment, SegPreprocess, seg_eval_images, seg_train_batches
from medtl_jax.weights.model_input import input_normalization
from medtl_jax.models import get_spec
from medtl_jax.models.segmenter import build_segmenter
from medtl_jax.tasks.segmentation.metrics import SELECTABLE_METRICS, segmentation_report
from medtl_jax.tasks.segmentation.sliding_window import sliding_window_predict
from medtl_jax.tasks.segmentation.task import SegmentationTask
from medtl_jax.transfer.modes import effective_bn_mode


@dataclasses.dataclass(frozen=True)
class SegmentationBatchTask:
    """The trainer's view of a SegmentationTask: per-example loss of a {'image', 'mask', 'valid'} batch."""

    task: SegmentationTask

    @property
    def num_outputs(self) -> int:
        return self.task.num_outputs

    def batch_loss(self, logits: jax.Array, batch: dict) -> jax.Array:
        return self.task.loss(logits, batch["mask"], batch["valid"])


def segmentation_model(config, info) -> tuple[SegmentationTask, Any, SegPreprocess]:
    """Task, segmenter and preprocessing for `config` on data described by `info` (reads no data, so
    `medtl_jax.inference.prediction_model` rebuilds a finished run's model with it)."""
    if config.model.in_channels != 3:
        raise ValueError("config.model.in_channels must be 3 for segmentation (images are read as RGB)")
    task = SegmentationTask(info.num_classes, loss=config.loss.segmentation, focal_gamma=config.loss.focal_gamma)
    dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
    model = build_segmenter(config.model.name, task.num_outputs, decoder=config.segmentation.decoder, dtype=dtype,
                            backbone_bn=effective_bn_mode(config.transfer))
    mean, std = input_normalization(get_spec(config.model.name), config.model.name, 3)
    return task, model, SegPreprocess(mean=mean, std=std, scale=config.segmentation.scale)


def segmentation_parts(config, data, mesh) -> RunParts:
    """Task, model, patch epochs and sliding-window evaluator of a segmentation run."""
    seg, info = config.segmentation, data.info
    task, model, preprocess = segmentation_model(config, info)
    a = config.augment
    augment = (SegAugment(flip=a.flip, rot90=a.flip, rotate_degrees=a.rotate_degrees, brightness=a.brightness,
                          contrast=a.contrast) if a.enabled else None)
    train_source = data.sources["train"]
    steps_per_epoch = len(train_source) * seg.patches_per_image // config.train.batch_size

    def train_epoch(epoch: int, start: int):
        ds = seg_train_batches(train_source, patch_size=seg.patch_size, patches_per_image=seg.patches_per_image,
                               batch_size=config.train.batch_size // jax.process_count(), seed=config.seed,
                               epoch=epoch, preprocess=preprocess, augment=augment,
                               foreground_fraction=seg.foreground_fraction, shard_index=jax.process_index(),
                               shard_count=jax.process_count())
        return as_iterator(ds[start:])

    evaluator = SegmentationEvaluator(config, task, model, data, preprocess, mesh)
    select = "dice" if config.train.select_metric == "auto" else config.train.select_metric
    check_select_metric(select, "segmentation", SELECTABLE_METRICS)
    return RunParts(SegmentationBatchTask(task), model, (seg.patch_size, seg.patch_size, 3), steps_per_epoch,
                    train_epoch, evaluator, select)


class SegmentationEvaluator:
    """Whole-image probabilities by sliding windows, scored against the masks inside the field of view."""

    def __init__(self, config, task: SegmentationTask, model, data, preprocess: SegPreprocess, mesh):
        self.config, self.task, self.data, self.preprocess, self.mesh = config, task, data, preprocess, mesh
        self.window = config.segmentation.window or config.segmentation.patch_size
        self.batch = config.train.eval_batch_size

        def probs(state, images):
            logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
            p = task.probabilities(logits)
            return p[..., None] if p.ndim == 3 else p

        self._probs = jax.jit(probs, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                              out_shardings=parallel.replicated(mesh))

    def _predict_fn(self, state):
        def run(patches):
            n = len(patches)
            padded = np.zeros((self.batch, *patches.shape[1:]), np.float32)
            padded[:n] = patches
            images = jax.device_put(padded, parallel.batch_sharded(self.mesh))
            return np.asarray(jax.device_get(self._probs(state, images)))[:n]
        return run

    def predict_split(self, state, split: str) -> list[dict]:
        """Per image: id, foreground/class probabilities [H,W(,C)] on the original grid, mask, fov."""
        source, out = self.data.sources[split], []
        run = self._predict_fn(state)
        for item in seg_eval_images(source, self.preprocess):
            probs = sliding_window_predict(run, item["image"], window=self.window,
                                           overlap=self.config.segmentation.overlap, batch_size=self.batch)
            record = source[item["index"]]
            h, w = record["mask"].shape
            if probs.shape[:2] != (h, w):  # config.segmentation.scale != 1: back to the original grid
                probs = np.stack([np.asarray(PIL.Image.fromarray(probs[..., k].astype(np.float32)).resize(
                    (w, h), PIL.Image.BILINEAR)) for k in range(probs.shape[-1])], axis=-1)
            out.append({"id": item["id"], "probs": probs, "mask": record["mask"], "fov": record["fov"]})
        return out

    def _report(self, preds: list[dict]) -> dict:
        binary = self.task.num_outputs == 1
        masks = [(p["probs"][..., 0] >= self.config.eval.threshold).astype(np.int64) if binary
                 else p["probs"].argmax(-1) for p in preds]
        report = segmentation_report([p["mask"] for p in preds], masks, num_classes=self.task.num_classes,
                                     valid_masks=[p["fov"] > 0 for p in preds])
        report["ids"] = [p["id"] for p in preds]
        return report

    def validate(self, state) -> dict:
        """Validation Dice/IoU/HD95 (means over images): the per-epoch selection input."""
        report = self._report(self.predict_split(state, "validation"))
        return {k: v for k, v in report.items() if k not in ("per_image", "ids")}

    def final(self, state, workdir: pathlib.Path) -> dict:
        """Validation and test reports with per-image values; probabilities saved as uint8 maps."""
        results = {}
        for split, name in (("validation", "val"), ("test", "test")):
            if len(self.data.sources[split]) == 0:
                results[name] = {"num_images": 0, "note": NO_TEST_SPLIT}
                continue
            preds = self.predict_split(state, split)
            results[name] = self._report(preds)
            _write_probabilities(workdir / f"predictions_{name}.npz", preds)
        return results


def _write_probabilities(path: pathlib.Path, preds: list[dict]) -> None:
    if jax.process_index() != 0:
        return
    buf = io.BytesIO()
    np.savez_compressed(buf, ids=np.array([p["id"] for p in preds]),
                        **{f"probs_{i}": np.round(p["probs"] * 255).astype(np.uint8) for i, p in enumerate(preds)})
    write_bytes_atomic(path, buf.getvalue())
