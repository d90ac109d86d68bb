"""SegmentationTask losses against independent numpy formulas; invalid pixels never count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.tasks.segmentation.task import SEGMENTATION_LOSSES, SegmentationTask

B, H, W = 2, 5, 6


def sample(num_classes, seed=0):
    rng = np.random.default_rng(seed)
    k = 1 if num_classes == 2 else num_classes
    logits = rng.normal(0, 2, (B, H, W, k)).astype(np.float32)
    masks = rng.integers(0, num_classes, (B, H, W))
    valid = (rng.random((B, H, W)) < 0.7).astype(np.float32)
    valid[:, 0, 0] = 1  # at least one valid pixel per image
    return logits, masks, valid


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def np_softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_pixel_ce(logits, masks, num_classes):
    if num_classes == 2:
        p = np_sigmoid(logits[..., 0])
        return -(masks * np.log(p) + (1 - masks) * np.log(1 - p))
    p = np_softmax(logits)
    return -np.log(np.take_along_axis(p, masks[..., None], -1)[..., 0])


def np_pixel_focal(logits, masks, num_classes, gamma):
    if num_classes == 2:
        p = np_sigmoid(logits[..., 0])
        pt = np.where(masks == 1, p, 1 - p)
    else:
        pt = np.take_along_axis(np_softmax(logits), masks[..., None], -1)[..., 0]
    return -((1 - pt) ** gamma) * np.log(pt)


def np_dice_loss(logits, masks, valid, num_classes, smooth):
    """Per image: 1 - mean over foreground classes c of (2 sum p_c t_c + s) / (sum p_c + sum t_c + s)."""
    out = []
    for b in range(logits.shape[0]):
        v = valid[b].astype(bool)
        if num_classes == 2:
            probs, targets = [np_sigmoid(logits[b, ..., 0])[v]], [(masks[b] == 1)[v]]
        else:
            sm = np_softmax(logits[b])
            probs = [sm[..., c][v] for c in range(1, num_classes)]
            targets = [(masks[b] == c)[v] for c in range(1, num_classes)]
        coeffs = [(2 * np.sum(p * t) + smooth) / (p.sum() + t.sum() + smooth) for p, t in zip(probs, targets)]
        out.append(1 - np.mean(coeffs))
    return np.array(out)


def np_masked_mean(per_pixel, valid):
    return (per_pixel * valid).sum((1, 2)) / valid.sum((1, 2))


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("loss", SEGMENTATION_LOSSES)
def test_losses_match_numpy(num_classes, loss):
    task = SegmentationTask(num_classes, loss=loss, focal_gamma=1.5, dice_smooth=0.5)
    logits, masks, valid = sample(num_classes)
    ce = np_masked_mean(np_pixel_ce(logits, masks, num_classes), valid)
    dice = np_dice_loss(logits, masks, valid, num_classes, 0.5)
    expected = {"ce": ce, "dice": dice, "dice_ce": ce + dice,
                "focal": np_masked_mean(np_pixel_focal(logits, masks, num_classes, 1.5), valid)}[loss]
    got = task.loss(jnp.asarray(logits), jnp.asarray(masks), jnp.asarray(valid))
    assert got.shape == (B,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_num_outputs():
    assert SegmentationTask(2).num_outputs == 1
    assert SegmentationTask(5).num_outputs == 5


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("loss", SEGMENTATION_LOSSES)
def test_invalid_pixels_neither_change_the_loss_nor_get_gradient(num_classes, loss):
    task = SegmentationTask(num_classes, loss=loss)
    logits, masks, valid = sample(num_classes, seed=1)
    invalid = valid == 0
    logits2 = np.where(invalid[..., None], 1e4, logits).astype(np.float32)  # extreme logits
    masks2 = np.where(invalid, 255, masks)  # an 'ignore' label outside the class range
    base = task.loss(logits, masks, valid)
    changed = task.loss(logits2, masks2, valid)
    np.testing.assert_array_equal(base, changed)
    grad = jax.grad(lambda z: task.loss(z, masks2, valid).sum())(jnp.asarray(logits2))
    assert np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[invalid] == 0)
    assert np.any(np.asarray(grad)[~invalid] != 0)


def test_valid_defaults_to_every_pixel():
    task = SegmentationTask(3, loss="ce")
    logits, masks, _ = sample(3)
    np.testing.assert_allclose(task.loss(logits, masks), task.loss(logits, masks, np.ones((B, H, W))))
    np.testing.assert_allclose(task.loss(logits, masks), np_pixel_ce(logits, masks, 3).mean((1, 2)),
                               rtol=1e-5)


def test_dice_is_near_zero_for_a_confident_perfect_prediction():
    masks = np.zeros((1, 8, 8), np.int64)
    masks[0, 2:5, 3:7] = 1
    logits = np.where(masks == 1, 30.0, -30.0)[..., None].astype(np.float32)
    task = SegmentationTask(2, loss="dice")
    assert float(task.loss(logits, masks)[0]) < 1e-6
    assert float(task.loss(-logits, masks)[0]) > 0.9  # the complement: no overlap


def test_fully_invalid_image_gives_zero_ce_not_nan():
    task = SegmentationTask(2, loss="ce")
    logits, masks, valid = sample(2)
    valid[1] = 0
    out = np.asarray(task.loss(logits, masks, valid))
    assert np.isfinite(out).all() and out[1] == 0


def test_probabilities_and_predict_mask():
    logits, _, _ = sample(2)
    binary = SegmentationTask(2)
    probs = binary.probabilities(logits)
    assert probs.shape == (B, H, W)
    np.testing.assert_allclose(probs, np_sigmoid(logits[..., 0]), rtol=1e-6)
    pred = binary.predict_mask(np.asarray(probs), threshold=0.3)
    assert isinstance(pred, np.ndarray)
    np.testing.assert_array_equal(pred, (np_sigmoid(logits[..., 0]) >= 0.3).astype(int))

    logits4, _, _ = sample(4)
    multi = SegmentationTask(4)
    probs4 = multi.probabilities(jnp.asarray(logits4))
    assert probs4.shape == (B, H, W, 4)
    np.testing.assert_allclose(probs4, np_softmax(logits4), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(multi.predict_mask(probs4), logits4.argmax(-1))


def test_unknown_loss_names_the_config_key_and_choices():
    with pytest.raises(ValueError, match=r"config\.loss\.segmentation.*'dicey'.*dice_ce"):
        SegmentationTask(2, loss="dicey")
    with pytest.raises(ValueError, match="at least 2"):
        SegmentationTask(1)


def test_task_is_hashable_and_comparable():
    assert SegmentationTask(3, loss="ce") == SegmentationTask(3, loss="ce")
    assert SegmentationTask(3, loss="ce") != SegmentationTask(3, loss="dice")
    assert len({SegmentationTask(2), SegmentationTask(2)}) == 1
