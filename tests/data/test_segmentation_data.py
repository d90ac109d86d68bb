"""Segmentation data: folder readers, the loader, patch epochs, joint augmentation, the real sets."""

import pathlib

import numpy as np
import PIL.Image
import pytest

from medtl_jax.data.sources import segmentation_folders as sf
from medtl_jax.data.pipeline import segmentation as sp
from medtl_jax.data.pipeline.batches import as_iterator
from tests.helpers.paths import shared_data_dir

RAW = sp.SegPreprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # image = uint8 / 255
GEOMETRY = sp.SegAugment(flip=True, rot90=True, rotate_degrees=0, brightness=0, contrast=0)


def _save(path: pathlib.Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = PIL.Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)


def _source(n=5, h=40, w=48, seed=0):
    """Random RGB images whose mask is 'red > 127' and fov is 'green > 63' (pixels encode labels)."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    return sf.SegmentationSource(images, [(im[..., 0] > 127).astype(np.uint8) for im in images],
                                 [(im[..., 1] > 63).astype(np.uint8) for im in images],
                                 [f"im{i}" for i in range(n)])


def _batches(ds):
    return [ds[k] for k in range(len(ds))]


def _same(a, b):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x) and len(a) == len(b)


# ----------------------------------------------------------------------------------------------------
# The generic folder layout.
# ----------------------------------------------------------------------------------------------------

@pytest.fixture
def generic_root(tmp_path):
    """train: 5 RGB/gray PNGs with 0/255 masks and fov; test: 2 JPEGs with class-id masks 0..2."""
    rng = np.random.default_rng(1)
    for i in range(5):
        image = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
        if i == 0:
            _save(tmp_path / "train/images/a0.png", image[..., 0])  # gray
        else:
            _save(tmp_path / f"train/images/a{i}.png", image)
        mask = np.zeros((20 + i, 30), np.uint8)
        mask[2:5, 3:9] = 255
        _save(tmp_path / f"train/masks/a{i}.png", mask)
        fov = np.zeros((20 + i, 30), np.uint8)
        fov[:, 1:] = 255
        _save(tmp_path / f"train/fov/a{i}.gif", fov)
    for i in range(2):
        _save(tmp_path / f"test/images/t{i}.jpg", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        _save(tmp_path / f"test/masks/t{i}.png", np.arange(256, dtype=np.uint8).reshape(16, 16) % 3)
    return tmp_path


def test_generic_layout_records(generic_root):
    splits = sf.read_generic(generic_root)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "validation": 1, "test": 2}
    assert splits["train"].ids == ["a0", "a1", "a2", "a3"] and splits["validation"].ids == ["a4"]
    r = splits["train"][0]
    assert r["image"].dtype == np.uint8 and r["image"].shape == (20, 30, 3)
    assert np.array_equal(r["image"][..., 0], r["image"][..., 2])  # gray repeated to 3 channels
    assert set(np.unique(r["mask"])) == {0, 1} and r["mask"].sum() == 18  # 255 -> 1
    assert r["fov"].dtype == np.uint8 and r["fov"][:, 0].sum() == 0 and r["fov"][:, 1:].all()
    assert splits["validation"][0]["index"] == 0 and splits["validation"][0]["image"].shape[0] == 24
    t = splits["test"][1]
    assert t["id"] == "t1" and t["index"] == 1 and t["fov"].all()  # no fov folder -> all ones
    assert np.array_equal(t["mask"], np.arange(256).reshape(16, 16) % 3)  # class ids kept
    with pytest.raises(ValueError):
        r["mask"][0, 0] = 1  # cached arrays are read-only


def test_generic_validation_folder_and_val_count(generic_root):
    assert len(sf.read_generic(generic_root, val_count=2)["validation"]) == 2
    _save(generic_root / "val/images/v.png", np.zeros((8, 8, 3), np.uint8))
    _save(generic_root / "val/masks/v.png", np.ones((8, 8), np.uint8))
    splits = sf.read_generic(generic_root, val_count=2)
    assert len(splits["train"]) == 5 and splits["validation"].ids == ["v"]


def test_generic_missing_mask_names_the_image(generic_root):
    (generic_root / "train/masks/a3.png").unlink()
    with pytest.raises(ValueError, match=r"no mask for image .*a3\.png"):
        sf.read_generic(generic_root)


def test_generic_truncated_png_names_the_file(generic_root):
    path = generic_root / "train/images/a2.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cannot read image file .*a2\.png"):
        sf.read_generic(generic_root)


def test_generic_bad_masks(generic_root):
    mask = np.zeros((22, 30), np.uint8)
    mask[0, :2] = (1, 255)
    _save(generic_root / "train/masks/a2.png", mask)
    with pytest.raises(ValueError, match=r"a2\.png mixes 255"):
        sf.read_generic(generic_root)
    _save(generic_root / "train/masks/a2.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"a2\.png is \(22, 30\)"):
        sf.read_generic(generic_root)


def test_palette_masks_give_indices_and_binary_masks_use_gray_level(tmp_path):
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    image = PIL.Image.fromarray(indices, mode="P")
    image.putpalette([4, 2, 4, 252, 254, 252, 9, 9, 9] + [0] * 759)  # like DRIVE's 2nd_manual
    image.save(tmp_path / "m.gif")
    assert np.array_equal(sf.read_class_mask(tmp_path / "m.gif"), indices)
    assert np.array_equal(sf.read_binary_mask(tmp_path / "m.gif"), [[0, 1], [0, 1]])


def test_load_segmentation_bundle_and_errors(generic_root, tmp_path_factory, monkeypatch):
    bundle = sf.load_segmentation({"name": "seg_folders", "manual_dir": str(generic_root)})
    info = bundle.info
    assert info.task == "segmentation" and info.num_classes == 3 and info.channels == 3
    assert info.label_names == ("background", "class_1", "class_2") and info.image_size == 30
    assert info.splits == {"train": 4, "validation": 1, "test": 2}
    assert len(bundle.sources["test"]) == 2
    with pytest.raises(ValueError, match="config.data.manual_dir"):
        sf.load_segmentation({"name": "seg_folders"})
    monkeypatch.setenv("MEDTL_SHARED_DATA", str(tmp_path_factory.mktemp("empty")))
    with pytest.raises(FileNotFoundError, match=r"retina_vessels/DRIVE.*config\.data\.manual_dir"):
        sf.load_segmentation({"name": "drive"})


# ----------------------------------------------------------------------------------------------------
# Training patches.
# ----------------------------------------------------------------------------------------------------

def _train(source, **kw):
    args = dict(patch_size=16, patches_per_image=4, batch_size=4, seed=3, epoch=1,
                preprocess=RAW, augment=sp.SegAugment(rotate_degrees=20), foreground_fraction=0.5)
    args.update(kw)
    return sp.seg_train_batches(source, **args)


def test_patch_batches_shapes_and_determinism():
    src = _source()
    ds = _train(src)
    assert len(ds) == 5  # 5 images x 4 visits / 4
    b = ds[0]
    assert b["image"].dtype == np.float32 and b["image"].shape == (4, 16, 16, 3)
    assert b["mask"].dtype == np.int32 and b["mask"].shape == (4, 16, 16)
    assert b["valid"].dtype == np.float32 and set(np.unique(b["valid"])) <= {0.0, 1.0}
    full = _batches(ds)
    assert _same(full, _batches(_train(src)))  # same (seed, epoch): identical
    assert not _same(full, _batches(_train(src, epoch=2)))
    assert not _same(full, _batches(_train(src, seed=4)))
    assert _same(list(as_iterator(_train(src), num_threads=2)), full)  # threaded reading: same
    for k in (1, 3):
        tail = _train(src)[k:]  # a fresh dataset resumed at step k
        assert len(tail) == len(full) - k and _same(_batches(tail), full[k:])


def test_sharding_splits_the_global_batch():
    src = _source(n=6)
    whole = _batches(_train(src, batch_size=8))
    parts = [_batches(_train(src, shard_index=i, shard_count=2)) for i in range(2)]
    for t, batch in enumerate(whole):
        for key in batch:
            assert np.array_equal(batch[key], np.concatenate([parts[0][t][key], parts[1][t][key]]))
    with pytest.raises(ValueError, match="shard_index"):
        _train(src, shard_index=2, shard_count=2)


def test_every_image_visited_patches_per_image_times():
    images = [np.full((20, 20, 3), 10 * i, np.uint8) for i in range(6)]
    src = sf.SegmentationSource(images, [np.zeros((20, 20), np.uint8)] * 6,
                                [np.ones((20, 20), np.uint8)] * 6, list("abcdef"))
    ds = _train(src, patches_per_image=3, batch_size=2, augment=None)
    seen = np.concatenate([np.rint(b["image"][:, 0, 0, 0] * 255 / 10) for b in _batches(ds)])
    assert np.bincount(seen.astype(int), minlength=6).tolist() == [3] * 6


def test_small_images_are_padded_as_invalid():
    image = np.full((10, 12, 3), 200, np.uint8)
    src = sf.SegmentationSource([image], [np.ones((10, 12), np.uint8)], [np.ones((10, 12), np.uint8)],
                                ["small"])
    for b in _batches(_train(src, batch_size=2, augment=GEOMETRY)):
        assert b["valid"].sum(axis=(1, 2)).tolist() == [120.0, 120.0]
        inside = b["valid"] > 0
        assert (b["mask"][inside] == 1).all() and (b["mask"][~inside] == 0).all()
        assert np.allclose(b["image"][inside], 200 / 255) and (b["image"][~inside] == 0).all()


def _decode(batch):
    return np.rint(batch["image"] * 255).astype(np.int64)


def test_flips_and_quarter_turns_keep_image_mask_fov_aligned():
    src = _source(h=40, w=48)
    plain = _batches(_train(src, augment=None))
    moved = _batches(_train(src, augment=GEOMETRY))
    turned = 0
    for p, m in zip(plain, moved):
        pixels = _decode(m)
        assert np.array_equal(m["mask"], (pixels[..., 0] > 127).astype(np.int32))
        assert np.array_equal(m["valid"], (pixels[..., 1] > 63).astype(np.float32))
        for i in range(len(m["mask"])):  # the same patch, moved by one of the 8 symmetries
            sym = [np.rot90(f, k) for f in (p["mask"][i], p["mask"][i][:, ::-1]) for k in range(4)]
            hits = [np.array_equal(s, m["mask"][i]) for s in sym]
            assert any(hits)
            turned += not hits[0]
    assert turned > 10


def test_rotation_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(5)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(blocks, 12, axis=0), 12, axis=1)  # 96x96 of 12-pixel blocks
    src = sf.SegmentationSource([image], [(image[..., 0] > 127).astype(np.uint8)],
                                [np.ones((96, 96), np.uint8)], ["blocks"])
    aug = sp.SegAugment(flip=False, rot90=False, rotate_degrees=40, brightness=0, contrast=0)
    rotated = _batches(_train(src, patch_size=32, patches_per_image=16, augment=aug))
    plain = _batches(_train(src, patch_size=32, patches_per_image=16, augment=None))
    agree, moved = [], []
    for r, p in zip(rotated, plain):
        valid = r["valid"] > 0
        agree.append(((_decode(r)[..., 0] > 127) == (r["mask"] > 0))[valid].mean())
        moved.append((r["mask"] != p["mask"]).mean())
    assert min(agree) > 0.93  # only bilinear block edges may disagree with the nearest mask
    assert np.mean(moved) > 0.05  # and the patches really were rotated


def test_brightness_contrast_change_only_the_image():
    src = _source()
    geo = _batches(_train(src, augment=GEOMETRY))
    light = _batches(_train(src, augment=sp.SegAugment(brightness=0.3, contrast=0.3)))
    for g, b in zip(geo, light):
        assert np.array_equal(g["mask"], b["mask"]) and np.array_equal(g["valid"], b["valid"])
        assert not np.allclose(g["image"], b["image"])
        assert b["image"].min() >= 0.0 and b["image"].max() <= 1.0


def test_site_robustness_augmentations_follow_their_formulas_and_change_only_the_image():
    src = _source()
    geo = _batches(_train(src, augment=GEOMETRY))
    colour = _batches(_train(src, augment=sp.SegAugment(brightness=0, contrast=0, gamma=0.4, channel_gain=0.3)))
    blurred = _batches(_train(src, augment=sp.SegAugment(brightness=0, contrast=0, blur=2.0)))
    assert _same(colour, _batches(_train(src, augment=sp.SegAugment(brightness=0, contrast=0, gamma=0.4,
                                                                     channel_gain=0.3))))  # deterministic
    for g, c, b in zip(geo, colour, blurred):
        for other in (c, b):
            assert np.array_equal(g["mask"], other["mask"]) and np.array_equal(g["valid"], other["valid"])
        assert not np.allclose(g["image"], c["image"]) and c["image"].min() >= 0 and c["image"].max() <= 1
        # blur only smooths: neighbouring pixels differ less, the mean stays
        rough = lambda x: np.abs(np.diff(x, axis=2)).mean()  # noqa: E731
        assert rough(b["image"]) < rough(g["image"]) and abs(b["image"].mean() - g["image"].mean()) < 0.02
    table = sp._lut(RAW, gain=1.2, bias=-0.1, gamma=0.8, channel_gain=np.array([0.9, 1.0, 1.1]))
    v = np.arange(256) / 255.0
    expected = np.clip((v ** 0.8)[:, None] * (1.2 * np.array([0.9, 1.0, 1.1]))[None] - 0.1, 0, 1)
    np.testing.assert_allclose(table, expected, atol=1e-6)
    np.testing.assert_array_equal(sp._lut(RAW, gain=1.2, bias=-0.1), sp._lut(RAW, gain=1.2, bias=-0.1, gamma=1.0))


def test_foreground_fraction_centres_patches_on_foreground():
    masks = []
    for i in range(4):
        mask = np.zeros((128, 128), np.uint8)
        mask[40 + 10 * i, 50:53] = 1  # one short line per image
        masks.append(mask)
    src = sf.SegmentationSource([np.zeros((128, 128, 3), np.uint8)] * 4, masks,
                                [np.ones((128, 128), np.uint8)] * 4, list("abcd"))

    def hit_rate(fraction):
        ds = _train(src, patches_per_image=8, foreground_fraction=fraction, augment=GEOMETRY)
        return np.mean([(b["mask"].sum(axis=(1, 2)) > 0).mean() for b in _batches(ds)])
    assert hit_rate(1.0) == 1.0 and hit_rate(0.0) < 0.5
    assert 0.3 < hit_rate(0.5) < 1.0


def test_scale_resizes_image_mask_fov():
    mask = np.zeros((40, 48), np.uint8)
    mask[:, :24] = 1
    src = sf.SegmentationSource([np.full((40, 48, 3), 90, np.uint8)] * 2, [mask] * 2,
                                [np.ones((40, 48), np.uint8)] * 2, ["a", "b"])
    pre = sp.SegPreprocess((0,) * 3, (1,) * 3, scale=0.5)
    for b in _batches(_train(src, patch_size=32, patches_per_image=2, batch_size=2, augment=None,
                             preprocess=pre)):
        assert b["image"].shape == (2, 32, 32, 3)  # the 20x24 image sits inside a padded patch
        assert b["valid"].sum(axis=(1, 2)).tolist() == [480.0, 480.0]
        assert b["mask"].sum(axis=(1, 2)).tolist() == [240, 240]
        assert np.allclose(b["image"][b["valid"] > 0], 90 / 255)
    with pytest.raises(ValueError, match="scale"):
        sp.SegPreprocess(scale=0)


def test_fov_diameter_resizes_each_image_to_a_common_field_of_view():
    def disc(size, radius):
        yy, xx = np.mgrid[:size, :size]
        fov = (((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2) <= radius ** 2).astype(np.uint8)
        return np.full((size, size, 3), 120, np.uint8), fov, fov.copy()

    small, large = disc(60, 25), disc(120, 50)  # fields 50 and 100 px wide
    src = sf.SegmentationSource([small[0], large[0]], [small[1], large[1]], [small[2], large[2]], ["s", "l"])
    pre = sp.SegPreprocess(fov_diameter=40)
    assert [sp.record_scale(src[i], pre) for i in range(2)] == [0.8, 0.4]
    out = list(sp.seg_eval_images(src, pre))
    assert [o["image"].shape for o in out] == [(48, 48, 3), (48, 48, 3)]
    assert [o["original_size"] for o in out] == [(60, 60), (120, 120)]
    no_fov = sf.SegmentationSource([large[0]], [large[1] * 0], [np.zeros((120, 120), np.uint8)], ["n"])
    assert sp.record_scale(no_fov[0], pre) == 40 / 120  # no field of view: the image's longer side
    assert sp.record_scale(src[0], sp.SegPreprocess(scale=0.5)) == 0.5
    with pytest.raises(ValueError, match="fov_diameter"):
        sp.SegPreprocess(fov_diameter=-1)


def test_eval_images_full_size():
    src = _source(n=3, h=40, w=48)
    pre = sp.SegPreprocess(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    out = list(sp.seg_eval_images(src, pre))
    assert [o["id"] for o in out] == ["im0", "im1", "im2"] and [o["index"] for o in out] == [0, 1, 2]
    want = (src[1]["image"] / 255.0 - np.array(pre.mean)) / np.array(pre.std)
    assert out[1]["image"].dtype == np.float32 and np.allclose(out[1]["image"], want, atol=1e-5)
    assert out[1]["mask"].dtype == np.int32 and np.array_equal(out[1]["mask"], src[1]["mask"])
    assert out[1]["valid"].dtype == np.float32 and np.array_equal(out[1]["valid"], src[1]["fov"])
    half = next(sp.seg_eval_images(src, sp.SegPreprocess(scale=0.5)))
    assert half["image"].shape == (20, 24, 3) and half["mask"].shape == (20, 24)
    assert half["original_size"] == (40, 48)


# ----------------------------------------------------------------------------------------------------
# The real data sets (skip where ../shared/data is absent).
# ----------------------------------------------------------------------------------------------------

def _real(name: str, subdir: str):
    root = shared_data_dir()
    if root is None or not (root / subdir).is_dir():
        pytest.skip(f"real {name} files not found: set MEDTL_SHARED_DATA to the shared data folder "
                    f"(the one holding {subdir})")
    return sf.load_segmentation({"name": name, "manual_dir": str(root / subdir)})


def _fractions(source):
    """Per image: foreground fraction inside the fov, and fov fraction of the image."""
    recs = [source[i] for i in range(len(source))]
    return (np.array([r["mask"][r["fov"] > 0].mean() for r in recs]),
            np.array([r["fov"].mean() for r in recs]))


def test_real_drive():
    bundle = _real("drive", "retina_vessels/DRIVE")
    assert bundle.info.splits == {"train": 16, "validation": 4, "test": 20}
    assert bundle.info.label_names == ("background", "vessel") and bundle.info.image_size == 584
    assert bundle.sources["validation"].ids == [f"{n}_training" for n in range(37, 41)]
    for split, source in bundle.sources.items():
        assert source[0]["image"].shape == (584, 565, 3) and source[0]["mask"].shape == (584, 565)
        vessels, fov = _fractions(source)
        assert 0.08 < vessels.mean() < 0.15 and vessels.min() > 0.06 and vessels.max() < 0.2, split
        assert np.all((0.6 < fov) & (fov < 0.75)), split
    second = sf.read_drive(shared_data_dir() / "retina_vessels/DRIVE", annotator=2)["test"]
    vessels2, _ = _fractions(second)  # palette GIF 0/1: decoded as vessels, not all ones
    assert 0.08 < vessels2.mean() < 0.15


def test_real_chase_db1():
    bundle = _real("chase_db1", "retina_vessels/CHASE_DB1")
    assert bundle.info.splits == {"train": 16, "validation": 4, "test": 8}
    assert bundle.sources["validation"].ids == ["Image_09L", "Image_09R", "Image_10L", "Image_10R"]
    assert bundle.sources["test"].ids[0] == "Image_11L" and bundle.info.image_size == 999
    for split, source in bundle.sources.items():
        assert source[0]["image"].shape == (960, 999, 3)
        vessels, fov = _fractions(source)
        assert 0.06 < vessels.mean() < 0.14 and np.all((0.6 < fov) & (fov < 0.75)), split
        for i in range(len(source)):  # the derived fov holds nearly all annotated vessel pixels
            r = source[i]
            assert r["mask"][r["fov"] == 0].sum() < 0.005 * r["mask"].sum()


def test_real_isbi2012():
    bundle = _real("isbi2012", "isbi2012_membrane")
    assert bundle.info.splits == {"train": 20, "validation": 5, "test": 5}
    assert bundle.info.label_names == ("background", "membrane") and bundle.info.image_size == 512
    assert bundle.sources["test"].ids == ["25", "26", "27", "28", "29"]  # numeric, not text, order
    for source in bundle.sources.values():
        r = source[0]
        assert r["image"].shape == (512, 512, 3)
        assert np.array_equal(r["image"][..., 0], r["image"][..., 1])
        membrane, fov = _fractions(source)
        assert np.all((0.12 < membrane) & (membrane < 0.35)) and np.all(fov == 1.0)  # minority class
