"""Evaluation of a segmenter: whole-image probabilities by sliding windows, scored inside the field of view.

`WindowPredictor` predicts every image of a source whole (overlapping windows of the training patch size,
`sliding_window`), back on the image's original grid; prediction of users' images uses it alone.
`SegmentationEvaluator` scores those maps with Dice/IoU/HD95 against the masks (`metrics`).
"""

from __future__ import annotations

import jax
import numpy as np
import PIL.Image
from jax.sharding import Mesh

from medtl_jax.data.pipeline.segmentation import SegPreprocess, seg_eval_images
from medtl_jax.runtime import parallel
from medtl_jax.runtime.run_folder import RunDir
from medtl_jax.tasks.base import NO_TEST_SPLIT
from medtl_jax.tasks.segmentation.metrics import segmentation_report
from medtl_jax.tasks.segmentation.sliding_window import sliding_window_predict
from medtl_jax.tasks.segmentation.task import SegmentationTask


class WindowPredictor:
    """[H, W, C] probabilities of whole images (C = 1 for binary), one compiled window batch shape.

    Args:
      task, model, preprocess, mesh: the run's task, segmenter, eval preprocessing and device mesh.
      window: side of the square windows (the training patch size unless configured).
      overlap: fraction by which neighbouring windows overlap.
      batch: windows per compiled call (a multiple of the device count).
      tta_flips: each window's probabilities averaged with those of its mirror image, mirrored back.
    """

    def __init__(self, task: SegmentationTask, model, preprocess: SegPreprocess, mesh: Mesh, *, window: int,
                 overlap: float, batch: int, tta_flips: bool = False):
        self.preprocess, self.mesh = preprocess, mesh
        self.window, self.overlap, self.batch = window, overlap, batch

        def window_probs(state, images):
            logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
            p = task.probabilities(logits)
            return p[..., None] if p.ndim == 3 else p

        def probs(state, images):
            if not tta_flips:
                return window_probs(state, images)
            return (window_probs(state, images) + window_probs(state, images[:, :, ::-1, :])[:, :, ::-1, :]) / 2

        self._probs = jax.jit(probs, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                              out_shardings=parallel.replicated(mesh))

    def _windows_fn(self, state):
        def run(patches):
            n = len(patches)
            padded = np.zeros((self.batch, *patches.shape[1:]), np.float32)
            padded[:n] = patches
            images = jax.device_put(padded, parallel.batch_sharded(self.mesh))
            return np.asarray(jax.device_get(self._probs(state, images)))[:n]
        return run

    def predict(self, state, source) -> list[dict]:
        """[{'id', 'probs' [H, W, C] on the record's own grid, 'mask', 'fov'}] for every record of `source`,
        in order (`state` has .params and .batch_stats)."""
        out = []
        run = self._windows_fn(state)
        for item in seg_eval_images(source, self.preprocess):
            probs = sliding_window_predict(run, item["image"], window=self.window, overlap=self.overlap,
                                           batch_size=self.batch)
            record = source[item["index"]]
            h, w = record["mask"].shape
            if probs.shape[:2] != (h, w):  # rescaled (scale, fov_diameter): back to the original grid
                probs = np.stack([np.asarray(PIL.Image.fromarray(probs[..., k].astype(np.float32)).resize(
                    (w, h), PIL.Image.BILINEAR)) for k in range(probs.shape[-1])], axis=-1)
            out.append({"id": item["id"], "probs": probs, "mask": record["mask"], "fov": record["fov"]})
        return out


class SegmentationEvaluator:
    """Dice/IoU/HD95 of whole-image predictions inside each image's field of view.

    Args:
      task: the segmentation task. predictor: the run's WindowPredictor.
      sources: split name -> source ('validation', 'test'). threshold: foreground threshold of binary masks.
    """

    def __init__(self, task: SegmentationTask, predictor: WindowPredictor, sources: dict, *, threshold: float):
        self.task, self.predictor, self.sources, self.threshold = task, predictor, sources, threshold

    def _report(self, preds: list[dict]) -> dict:
        masks = [self.task.predict_mask(p["probs"][..., 0] if self.task.binary else p["probs"], self.threshold)
                 for p in preds]
        report = segmentation_report([p["mask"] for p in preds], masks, num_classes=self.task.num_classes,
                                     valid_masks=[p["fov"] > 0 for p in preds])
        report["ids"] = [p["id"] for p in preds]
        return report

    def validate(self, state) -> dict:
        """Validation Dice/IoU/HD95 (means over images): the per-epoch selection input."""
        report = self._report(self.predictor.predict(state, self.sources["validation"]))
        return {k: v for k, v in report.items() if k not in ("per_image", "ids")}

    def final(self, state, run_dir: RunDir) -> dict:
        """Validation and test reports with per-image values; probabilities saved as uint8 maps."""
        results = {}
        for split, name in (("validation", "val"), ("test", "test")):
            if len(self.sources[split]) == 0:
                results[name] = {"num_images": 0, "note": NO_TEST_SPLIT}
                continue
            preds = self.predictor.predict(state, self.sources[split])
            results[name] = self._report(preds)
            if jax.process_index() == 0:
                run_dir.write_probability_maps(name, [p["id"] for p in preds], [p["probs"] for p in preds])
        return results
