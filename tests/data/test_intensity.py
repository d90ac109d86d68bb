"""Per-image intensity preprocessing: what each mode promises, and that training and evaluation share it."""

import numpy as np
import pytest
import skimage.exposure

from medtl_jax.data.pipeline import segmentation as sp
from medtl_jax.data.pipeline.intensity import INTENSITY_MODES, apply_intensity
from medtl_jax.data.sources import segmentation_folders as sf


def _fundus(seed=0, h=64, w=72):
    """A dark disc (fov) with a brighter, smooth background and dark 'vessels', RGB with a red cast."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    fov = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 2 - 2) ** 2).astype(np.uint8)
    base = 90 + 40 * np.sin(yy / 9.0) * np.cos(xx / 11.0) + rng.normal(0, 6, (h, w))
    base[(xx % 13) < 2] -= 35  # vessels
    rgb = np.stack([base * 1.6, base, base * 0.4], -1) * fov[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8), fov


def test_standardize_gives_the_same_image_under_another_exposure_and_white_balance():
    image, fov = _fundus()
    out = apply_intensity(image, "standardize", fov)
    inside = out[fov > 0].astype(np.float64)
    assert np.allclose(inside.mean(0), 127.5, atol=3) and np.allclose(inside.std(0), 255 / 6, atol=3)
    assert (out[fov == 0] == 0).all()
    other_camera = np.clip(image * np.array([0.7, 1.2, 1.5]) + 10, 0, 255).astype(np.uint8) * fov[..., None]
    moved = apply_intensity(other_camera, "standardize", fov)
    assert np.abs(moved.astype(int) - out.astype(int))[fov > 0].mean() < 2.0  # rounding of the uint8 inputs
    assert np.abs(other_camera.astype(int) - image.astype(int))[fov > 0].mean() > 10  # the raw images differ


def test_green_clahe_is_the_equalised_green_channel_in_gray_and_ignores_colour_casts():
    image, fov = _fundus(h=96, w=104)
    out = apply_intensity(image, "green_clahe", fov)
    want = skimage.exposure.equalize_adapthist(image[..., 1], kernel_size=[12, 13], clip_limit=0.01)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 1] / 255.0 - want).max() <= 0.5 / 255 + 1e-6
    recast = image.copy()
    recast[..., 0] //= 2
    recast[..., 2] = 200
    assert np.array_equal(apply_intensity(recast, "green_clahe", fov), out)


def test_clahe_raises_local_contrast_of_a_flat_image():
    image, fov = _fundus(seed=1)
    dull = (image // 4 + 100).astype(np.uint8)  # a quarter of the contrast
    out = apply_intensity(dull, "clahe", fov)
    assert out.shape == dull.shape and out.dtype == np.uint8
    assert out[fov > 0].std() > 1.5 * dull[fov > 0].std()


def test_none_is_the_identity_and_bad_inputs_are_named():
    image, fov = _fundus()
    assert apply_intensity(image, "none", fov) is image
    with pytest.raises(ValueError, match="intensity mode.*'histogram'"):
        apply_intensity(image, "histogram", fov)
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        apply_intensity(image.astype(np.float32), "clahe", fov)
    with pytest.raises(ValueError, match="intensity must be one of"):
        sp.SegPreprocess(intensity="histogram")
    assert set(INTENSITY_MODES) == {"none", "standardize", "clahe", "green_clahe"}


def test_training_patches_and_evaluation_images_share_the_mapping():
    images, fovs, masks = [], [], []
    for seed in range(2):
        image, fov = _fundus(seed=seed)
        images.append(image)
        fovs.append(fov)
        masks.append((image[..., 1] < 60).astype(np.uint8) * fov)
    source = sf.SegmentationSource(images, masks, fovs, ["a", "b"])
    pre = sp.SegPreprocess(mean=(0.5,) * 3, std=(0.25,) * 3, intensity="standardize")
    evaluated = list(sp.seg_eval_images(source, pre))
    want = (apply_intensity(images[1], "standardize", fovs[1]) / 255.0 - 0.5) / 0.25
    assert np.allclose(evaluated[1]["image"], want, atol=1e-5)
    # A patch as large as the image, unaugmented, is the evaluation image (up to where it sits).
    batch = sp.seg_train_batches(source, patch_size=72, patches_per_image=1, batch_size=2, seed=0, epoch=0,
                                 preprocess=pre, augment=None)[0]
    for patch in batch["image"]:  # the 64-row image sits somewhere in the 72-row patch
        assert any(np.allclose(patch[top:top + 64], e["image"], atol=1e-5) for top in range(9) for e in evaluated)
