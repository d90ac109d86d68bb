"""Segmentation metrics agree with scikit-learn (Dice = F1, IoU = Jaccard) and a brute-force HD95."""

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn import metrics as skm

from medtl_jax.tasks.segmentation import metrics as sm


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _blob(rng, shape=(48, 40)):
    """A random blobby mask: thresholded smoothed noise."""
    from scipy import ndimage
    return ndimage.gaussian_filter(rng.normal(size=shape), 3) > 0.05


def _brute_boundary(mask):
    """Mask pixels with a 4-neighbour outside the mask or outside the image (independent of erosion)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _brute_hd95(pred, true, spacing):
    a = np.argwhere(_brute_boundary(pred)) * np.asarray(spacing)
    b = np.argwhere(_brute_boundary(true)) * np.asarray(spacing)
    d = cdist(a, b)
    return np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)


def test_dice_iou_equal_sklearn_f1_and_jaccard(rng):
    for _ in range(5):
        t, p = _blob(rng), _blob(rng)
        assert sm.dice(p, t) == pytest.approx(skm.f1_score(t.ravel(), p.ravel()))
        assert sm.iou(p, t) == pytest.approx(skm.jaccard_score(t.ravel(), p.ravel()))
    empty = np.zeros((5, 5), bool)
    assert sm.dice(empty, empty) == 1.0 and sm.iou(empty, empty) == 1.0
    full = np.ones((5, 5), bool)
    assert sm.dice(full, empty) == 0.0 and sm.iou(empty, full) == 0.0


def test_valid_mask_ignores_pixels_outside(rng):
    t, p = _blob(rng), _blob(rng)
    valid = np.zeros(t.shape, bool)
    valid[5:40, 3:30] = True
    assert sm.dice(p, t, valid) == pytest.approx(skm.f1_score(t[valid], p[valid]))
    assert sm.iou(p, t, valid) == pytest.approx(skm.jaccard_score(t[valid], p[valid]))
    # disagreement only outside the field of view does not count
    p2 = t.copy()
    p2[~valid] = ~p2[~valid]
    assert sm.dice(p2, t, valid) == 1.0 and sm.hausdorff95(p2, t, valid=valid) == 0.0
    assert sm.dice(p2, t) < 1.0


def test_hd95_equals_brute_force_cdist(rng):
    for spacing in [(1.0, 1.0), (0.5, 2.0)]:
        for _ in range(4):
            t, p = _blob(rng), _blob(rng)
            assert sm.hausdorff95(p, t, spacing) == pytest.approx(_brute_hd95(p, t, spacing))
    t, p = _blob(rng), _blob(rng)
    valid = np.zeros(t.shape, bool)
    valid[4:44, 2:35] = True
    assert sm.hausdorff95(p, t, valid=valid) == pytest.approx(_brute_hd95(p & valid, t & valid, (1, 1)))


def test_hd95_exact_small_cases():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[1, 1] = b[4, 5] = True  # single pixels: distance sqrt(3^2 + 4^2)
    assert sm.hausdorff95(a, b) == pytest.approx(5.0)
    assert sm.hausdorff95(a, b, spacing=(2.0, 1.0)) == pytest.approx(np.hypot(6.0, 4.0))
    assert sm.hausdorff95(a, a) == 0.0
    empty = np.zeros((10, 10), bool)
    assert sm.hausdorff95(empty, empty) == 0.0
    assert np.isnan(sm.hausdorff95(a, empty)) and np.isnan(sm.hausdorff95(empty, b))


def test_segmentation_report_binary(rng):
    trues = [_blob(rng).astype(int) for _ in range(4)]
    preds = [_blob(rng).astype(int) for _ in range(4)]
    preds[2] = np.zeros_like(trues[2])  # empty prediction: Dice 0, HD95 NaN
    r = sm.segmentation_report(trues, preds)
    dices = [skm.f1_score(t.ravel(), p.ravel(), zero_division=1.0) for t, p in zip(trues, preds)]
    ious = [skm.jaccard_score(t.ravel(), p.ravel(), zero_division=1.0) for t, p in zip(trues, preds)]
    assert [x["dice"] for x in r["per_image"]] == pytest.approx(dices)
    assert [x["iou"] for x in r["per_image"]] == pytest.approx(ious)
    assert r["dice"] == pytest.approx(np.mean(dices)) and r["iou"] == pytest.approx(np.mean(ious))
    assert r["dice_std"] == pytest.approx(np.std(dices))
    hd = [_brute_hd95(t.astype(bool), p.astype(bool), (1, 1)) for i, (t, p) in enumerate(zip(trues, preds)) if i != 2]
    assert np.isnan(r["per_image"][2]["hd95"])
    assert r["hd95"] == pytest.approx(np.mean(hd))
    acc = np.mean(np.concatenate([(t == p).ravel() for t, p in zip(trues, preds)]))
    assert r["accuracy"] == pytest.approx(acc)
    assert r["num_images"] == 4 and "dice_per_class" not in r
    json.dumps(r)


def test_segmentation_report_multiclass_with_valid_masks(rng):
    def class_map():
        m = np.zeros((40, 40), int)
        m[_blob(rng, (40, 40))] = 1
        m[_blob(rng, (40, 40)) & (m == 0)] = 2
        m[_blob(rng, (40, 40)) & (m == 0)] = 3
        return m

    trues = [class_map() for _ in range(3)]
    preds = [class_map() for _ in range(3)]
    valids = [np.ones((40, 40), bool) for _ in range(3)]
    valids[1][:, 30:] = False
    r = sm.segmentation_report(trues, preds, num_classes=4, valid_masks=valids)
    per_class = []
    for t, p, v in zip(trues, preds, valids):
        f1 = skm.f1_score(t[v], p[v], labels=[1, 2, 3], average=None, zero_division=1.0)
        jac = skm.jaccard_score(t[v], p[v], labels=[1, 2, 3], average=None, zero_division=1.0)
        per_class.append(f1)
        i = len(per_class) - 1
        assert r["per_image"][i]["dice"] == pytest.approx(f1.mean())
        assert r["per_image"][i]["iou"] == pytest.approx(jac.mean())
        hd = [_brute_hd95((p == c) & v, (t == c) & v, (1, 1)) for c in (1, 2, 3)]
        assert r["per_image"][i]["hd95"] == pytest.approx(np.mean(hd))
    assert r["dice_per_class"] == pytest.approx(list(np.mean(per_class, axis=0)))
    correct = sum(((t == p) & v).sum() for t, p, v in zip(trues, preds, valids))
    assert r["accuracy"] == pytest.approx(correct / sum(v.sum() for v in valids))
    json.dumps(r)
