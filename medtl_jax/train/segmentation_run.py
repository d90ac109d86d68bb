"""The segmentation side of a run: U-Net/FCN over a backbone, patch epochs, sliding-window evaluation.

Training sees random `config.segmentation.patch_size` patches (`patches_per_image` per image per epoch,
a share of them centred on foreground pixels); evaluation predicts each whole validation/test image with
overlapping windows (`medtl_jax.tasks.segmentation.evaluate`) and scores Dice, IoU and HD95 inside the
dataset's field of view. The selection metric defaults to validation Dice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from medtl_jax.data.pipeline.batches import as_iterator
from medtl_jax.data.pipeline.segmentation import SegAugment, SegPreprocess, seg_train_batches
from medtl_jax.models import get_spec
from medtl_jax.models.segmenter import build_segmenter
from medtl_jax.tasks.families import SEGMENTATION
from medtl_jax.tasks.segmentation.evaluate import SegmentationEvaluator, WindowPredictor
from medtl_jax.tasks.segmentation.task import SegmentationTask
from medtl_jax.train.run_parts import ModelParts, RunParts
from medtl_jax.transfer.modes import effective_bn_mode
from medtl_jax.weights.model_input import input_normalization


def segmentation_model(config, info) -> ModelParts:
    """Task, segmenter and preprocessing for `config` on data described by `info` (reads no data, so
    `medtl_jax.inference.restore` rebuilds a finished run's model with it)."""
    if config.model.in_channels != 3:
        raise ValueError("config.model.in_channels must be 3 for segmentation (images are read as RGB)")
    task = SegmentationTask(info.num_classes, loss=config.loss.segmentation, focal_gamma=config.loss.focal_gamma)
    dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
    model = build_segmenter(config.model.name, task.num_outputs, decoder=config.segmentation.decoder, dtype=dtype,
                            backbone_bn=effective_bn_mode(config.transfer))
    mean, std = input_normalization(get_spec(config.model.name), config.model.name, 3)
    size = config.segmentation.patch_size
    preprocess = SegPreprocess(mean=mean, std=std, scale=config.segmentation.scale,
                               intensity=config.segmentation.get("intensity", "none"),
                               fov_diameter=config.segmentation.get("fov_diameter", 0))
    return ModelParts(task, model, preprocess, (size, size, 3))


def window_predictor(config, built: ModelParts, mesh, batch: int | None = None) -> WindowPredictor:
    """Whole-image prediction of `built` with the config's window and overlap; `batch` windows per call
    (default config.train.eval_batch_size)."""
    seg = config.segmentation
    return WindowPredictor(built.task, built.model, built.preprocess, mesh, window=seg.window or seg.patch_size,
                           overlap=seg.overlap, batch=batch or config.train.eval_batch_size,
                           tta_flips=bool(config.eval.get("tta_flips", False)))


def segmentation_evaluator(config, built: ModelParts, data, mesh) -> SegmentationEvaluator:
    """The evaluator of `built` on `data`'s validation and test splits."""
    return SegmentationEvaluator(built.task, window_predictor(config, built, mesh), data.sources,
                                 threshold=config.eval.threshold)


def segmentation_parts(config, data, mesh) -> RunParts:
    """Task, model, patch epochs and sliding-window evaluator of a segmentation run."""
    seg = config.segmentation
    built = segmentation_model(config, data.info)
    a = config.augment
    augment = (SegAugment(flip=a.flip, rot90=a.flip, rotate_degrees=a.rotate_degrees, brightness=a.brightness,
                          contrast=a.contrast, gamma=a.get("gamma", 0.0), channel_gain=a.get("channel_gain", 0.0),
                          blur=a.get("blur", 0.0)) if a.enabled else None)
    train_source = data.sources["train"]
    steps_per_epoch = len(train_source) * seg.patches_per_image // config.train.batch_size

    def train_epoch(epoch: int, start: int):
        ds = seg_train_batches(train_source, patch_size=seg.patch_size, patches_per_image=seg.patches_per_image,
                               batch_size=config.train.batch_size // jax.process_count(), seed=config.seed,
                               epoch=epoch, preprocess=built.preprocess, augment=augment,
                               foreground_fraction=seg.foreground_fraction, shard_index=jax.process_index(),
                               shard_count=jax.process_count())
        return as_iterator(ds[start:])

    select = SEGMENTATION.select_metric(config.train.select_metric, data.info.task)
    return RunParts(built, steps_per_epoch, train_epoch, segmentation_evaluator(config, built, data, mesh), select)
