"""grain pipelines: deterministic epochs, resumption, sharding, normalisation, exact evaluation."""

import numpy as np
import pytest

from medtl_jax.data import (Augment, Preprocess, as_iterator, build_synthetic, eval_batches,
                            steps_per_epoch, train_batches)
from medtl_jax.data.pipeline.batches import epoch_order

PRE = Preprocess(input_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class FakeSource:
    """n records; example i is an 8x8 image of constant value i % 256 with label i (and 'index')."""

    def __init__(self, n=103, channels=1, size=8, multilabel=False):
        self.n, self.channels, self.size, self.multilabel = n, channels, size, multilabel

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        image = np.full((self.size, self.size, self.channels), i % 256, np.uint8)
        label = np.array([i % 2, (i // 2) % 2, 1], np.int32) if self.multilabel else i
        return {"image": image, "label": label, "index": i, "site": i % 3}


def _labels(ds):
    return np.concatenate([ds[k]["label"] for k in range(len(ds))])


def _train(source=None, **kw):
    args = dict(batch_size=8, seed=0, epoch=0, preprocess=PRE, augment=Augment())
    args.update(kw)
    return train_batches(FakeSource() if source is None else source, **args)


def test_steps_and_shapes():
    ds = _train()
    assert len(ds) == steps_per_epoch(103, 8) == 12
    batch = ds[0]
    assert batch["image"].shape == (8, 8, 8, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32


def test_same_seed_and_epoch_is_deterministic():
    a, b = _train(), _train()
    for k in range(len(a)):
        np.testing.assert_array_equal(a[k]["image"], b[k]["image"])
        np.testing.assert_array_equal(a[k]["label"], b[k]["label"])


def test_each_epoch_has_a_new_order_without_repeats():
    e0, e1 = _labels(_train(epoch=0)), _labels(_train(epoch=1))
    assert len(set(e0.tolist())) == len(e0) == 96
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, _labels(_train(seed=1)))


def test_resume_mid_epoch_equals_tail():
    ds = _train()
    tail = ds[5:]
    assert len(tail) == len(ds) - 5
    for j in range(len(tail)):
        np.testing.assert_array_equal(tail[j]["image"], ds[5 + j]["image"])
        np.testing.assert_array_equal(tail[j]["label"], ds[5 + j]["label"])


def test_shards_are_disjoint_equal_and_cover_the_epoch():
    shards = [_train(batch_size=4, shard_index=k, shard_count=3) for k in range(3)]
    assert len({len(s) for s in shards}) == 1
    parts = [_labels(s) for s in shards]
    union = np.concatenate(parts)
    assert len(set(union.tolist())) == len(union)  # disjoint
    order = epoch_order(103, seed=0, epoch=0)
    assert sorted(union.tolist()) == sorted(order[: len(union)].tolist())
    # The global batch at step t does not depend on how many processes share it.
    single = _train(batch_size=12)
    for t in range(len(single)):
        together = np.concatenate([s[t]["label"] for s in shards])
        assert sorted(together.tolist()) == sorted(single[t]["label"].tolist())


def test_indices_restrict_the_epoch():
    keep = np.arange(0, 103, 3)  # 35 examples -> 4 batches of 8
    labels = _labels(_train(indices=keep))
    assert len(labels) == 32 and set(labels.tolist()) <= set(keep.tolist())


def test_normalisation_of_a_constant_image():
    pre = Preprocess(input_size=8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.1))
    batch = _train(preprocess=pre, augment=None)[0]
    value = batch["label"].astype(np.float32) / 255.0  # image i is constant i
    expected = (value[:, None] - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(batch["image"], np.broadcast_to(expected[:, None, None, :],
                                                               batch["image"].shape), atol=1e-5)


def test_rgb_channels_are_kept_apart():
    class RGB(FakeSource):
        def __getitem__(self, i):
            record = super().__getitem__(i)
            record["image"] = np.broadcast_to(np.array([0, 128, 255], np.uint8), (8, 8, 3)).copy()
            return record
    batch = _train(RGB(channels=3), augment=None)[0]
    np.testing.assert_allclose(batch["image"][0, 0, 0], [-1.0, 128 / 255 * 2 - 1, 1.0], atol=1e-5)


def test_gray_becomes_three_equal_channels_and_resize():
    pre = Preprocess(input_size=20, mean=(0.5,) * 3, std=(0.5,) * 3, resize_method="nearest")
    for augment in (None, Augment()):
        image = _train(preprocess=pre, augment=augment)[0]["image"]
        assert image.shape == (8, 20, 20, 3)
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_augmentation_changes_pixels_but_keeps_labels():
    pre = Preprocess(input_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)

    class Gradient(FakeSource):
        def __getitem__(self, i):
            record = super().__getitem__(i)
            record["image"] = np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1))[..., None]
            return record
    plain = _train(Gradient(), preprocess=pre, augment=None)[0]
    aug = _train(Gradient(), preprocess=pre)[0]
    np.testing.assert_array_equal(plain["label"], aug["label"])
    assert not np.allclose(plain["image"], aug["image"])
    assert np.isfinite(aug["image"]).all()


def test_multilabel_labels_are_vectors():
    batch = _train(FakeSource(multilabel=True))[0]
    assert batch["label"].shape == (8, 3) and batch["label"].dtype == np.int32


@pytest.mark.parametrize("shard_count", [1, 2])
def test_eval_covers_every_example_once(shard_count):
    seen, num_batches = [], set()
    for shard in range(shard_count):
        batches = list(eval_batches(FakeSource(), batch_size=16, preprocess=PRE, shard_index=shard,
                                    shard_count=shard_count, extra_keys=("site",)))
        num_batches.add(len(batches))
        for batch in batches:
            assert batch["image"].shape == (16, 8, 8, 3)
            real = batch["mask"] == 1
            assert set(np.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
            assert (batch["index"][~real] == -1).all()
            assert (batch["image"][~real] == 0).all()
            np.testing.assert_array_equal(batch["label"][real], batch["index"][real])
            np.testing.assert_array_equal(batch["site"][real], batch["index"][real] % 3)
            seen.extend(batch["index"][real].tolist())
    assert len(num_batches) == 1  # every process runs the same number of steps
    assert sorted(seen) == list(range(103))
    if shard_count == 1:
        assert seen == list(range(103))  # source order


def test_eval_last_batch_is_padded():
    batches = list(eval_batches(FakeSource(), batch_size=16, preprocess=PRE))
    assert len(batches) == 7
    assert batches[-1]["mask"].tolist() == [1.0] * 7 + [0.0] * 9


def test_pipeline_on_a_tfds_source(tmp_path):
    src = build_synthetic("tiny", data_dir=str(tmp_path)).as_data_source(split="train")
    pre = Preprocess(input_size=48, mean=(0.5,) * 3, std=(0.5,) * 3)
    ds = train_batches(src, batch_size=16, seed=3, epoch=2, preprocess=pre, augment=Augment())
    batches = list(as_iterator(ds))
    assert len(batches) == 8
    np.testing.assert_array_equal(batches[3]["image"], ds[3]["image"])
    assert batches[0]["image"].shape == (16, 48, 48, 3)
    assert -1.0 <= batches[0]["image"].min() and batches[0]["image"].max() <= 1.0
