"""Test-time augmentation by mirror images: classifier scores averaged over an image and its mirror; a
segmenter's window probabilities averaged with the mirrored prediction of the mirror image."""

import jax
import jax.numpy as jnp
import numpy as np

from medtl_jax.data.pipeline.segmentation import SegPreprocess
from medtl_jax.models import build_classifier
from medtl_jax.models.segmenter import build_segmenter
from medtl_jax.runtime import parallel
from medtl_jax.runtime.checkpoint import ModelVariables
from medtl_jax.tasks import make_task
from medtl_jax.tasks.classification.evaluate import make_eval_step
from medtl_jax.tasks.segmentation.evaluate import WindowPredictor
from medtl_jax.tasks.segmentation.task import SegmentationTask


def _variables(model, shape):
    v = model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros(shape), train=False)
    return ModelVariables(params=v["params"], batch_stats=v.get("batch_stats", {}))


def test_classifier_flip_tta_is_the_mean_over_the_image_and_its_mirror():
    mesh = parallel.make_mesh(1)
    task = make_task("multiclass", 3)
    model = build_classifier("cbr_tiny", 3)
    state = _variables(model, (1, 32, 32, 3))
    images = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    plain = np.asarray(make_eval_step(model, task, mesh)(state, images))
    mirrored = np.asarray(make_eval_step(model, task, mesh)(state, images[:, :, ::-1]))
    tta = np.asarray(make_eval_step(model, task, mesh, tta_flips=True)(state, images))
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain, mirrored, atol=1e-4)  # the model is not mirror-symmetric by itself
    np.testing.assert_allclose(tta.sum(-1), 1.0, rtol=1e-5)  # still probabilities


def test_segmenter_flip_tta_makes_predictions_mirror_equivariant():
    mesh = parallel.make_mesh(1)
    task = SegmentationTask(2)
    model = build_segmenter("cbr_tiny", task.num_outputs, decoder="fcn")
    state = _variables(model, (1, 32, 32, 3))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    record = {"image": image, "mask": np.zeros((32, 40), np.uint8), "fov": np.ones((32, 40), np.uint8),
              "id": "a", "index": 0}
    mirror = {**record, "image": image[:, ::-1].copy(), "id": "b", "index": 1}
    pre = SegPreprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def probs(tta):
        predictor = WindowPredictor(task, model, pre, mesh, window=32, overlap=0.5, batch=4, tta_flips=tta)
        return [p["probs"] for p in predictor.predict(state, [record, mirror])]

    a, b = probs(False)
    assert not np.allclose(a, b[:, ::-1], atol=1e-4)
    a, b = probs(True)
    np.testing.assert_allclose(a, b[:, ::-1], atol=1e-5)
