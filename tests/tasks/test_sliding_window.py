"""Sliding-window inference: coverage, exactness for pointwise models, padding, weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.tasks.segmentation.sliding_window import sliding_window_predict, window_starts, window_weights


def pointwise(batch):
    """A per-pixel model with two output channels: 2x+1 of channel 0 and the channel sum."""
    return np.stack([batch[..., 0] * 2 + 1, batch.sum(-1)], axis=-1)


def image(h, w, c=3, seed=0):
    return np.random.default_rng(seed).normal(size=(h, w, c)).astype(np.float32)


@pytest.mark.parametrize("weighting", ["gaussian", "uniform"])
@pytest.mark.parametrize("shape,window", [((100, 77), 32), ((64, 64), 32), ((40, 90), (16, 24))])
def test_pointwise_model_gives_the_whole_image_prediction_exactly(weighting, shape, window):
    img = image(*shape)
    out = sliding_window_predict(pointwise, img, window=window, overlap=0.5, batch_size=3,
                                 weighting=weighting)
    assert out.shape == (*shape, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, pointwise(img[None])[0])


def test_jax_predict_fn_is_called_with_fixed_batches():
    sizes = []

    @jax.jit
    def model(x):
        return x[..., :1] * 2.0 + 1.0

    def predict(batch):
        sizes.append(batch.shape)
        return model(jnp.asarray(batch))

    img = image(100, 77, c=1)
    out = sliding_window_predict(predict, img, window=32, overlap=0.25, batch_size=4)
    np.testing.assert_allclose(out, img * 2 + 1, rtol=1e-6)
    assert set(sizes) == {(4, 32, 32, 1)}
    # 100 rows: starts 0, 24, 48, 68 (edge-aligned); 77 cols: 0, 24, 45 -> 12 windows, 3 batches.
    assert len(sizes) == 3


def test_every_pixel_is_covered_and_windows_stay_inside():
    assert window_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert window_starts(64, 32, 16) == [0, 16, 32]
    assert window_starts(32, 32, 16) == [0]
    for size, win, stride in [(100, 32, 16), (77, 32, 24), (33, 32, 1), (1000, 96, 48)]:
        starts = window_starts(size, win, stride)
        covered = np.zeros(size, bool)
        for s in starts:
            assert 0 <= s <= size - win
            covered[s:s + win] = True
        assert covered.all()
    # End to end: a model returning 1 everywhere averages to 1 everywhere (no pixel has weight 0).
    ones = sliding_window_predict(lambda b: np.ones(b.shape[:3] + (1,)), image(100, 77), window=32)
    np.testing.assert_array_equal(ones, 1.0)


def test_windows_are_averaged_with_the_given_weights():
    """A model whose output depends on the window position: the result is the weighted mean."""
    img = np.zeros((48, 32, 1), np.float32)
    img[:, :, 0] = np.arange(48)[:, None]  # row index, so each window knows where it starts

    def first_row(batch):  # every output pixel = the window's top row index
        return np.broadcast_to(batch[:, :1, :1, :1], batch.shape).copy()

    for weighting in ("uniform", "gaussian"):
        out = sliding_window_predict(first_row, img, window=32, overlap=0.5, weighting=weighting)
        # Row starts 0, 16 (= 48 - 32): rows 16..31 see both windows, weighted by position in each.
        wy = window_weights((32, 32), weighting)[:, 5]  # the weights of column 5 in each window
        r = np.arange(16, 32)
        expected = (wy[r] * 0 + wy[r - 16] * 16) / (wy[r] + wy[r - 16])
        np.testing.assert_allclose(out[16:32, 5, 0], expected, rtol=1e-6)
        np.testing.assert_array_equal(out[:16, :, 0], 0)
        np.testing.assert_array_equal(out[32:, :, 0], 16)


def test_gaussian_weights_peak_at_the_centre():
    g = window_weights((32, 32), "gaussian")
    assert g.shape == (32, 32) and np.isclose(g.max(), np.exp(-0.5 * (0.5 / 4) ** 2) ** 2)
    assert g[15, 15] == g[16, 16] == g.max() and g[0, 0] >= 1e-3 and g[0, 0] < g[8, 8] < g[15, 15]
    np.testing.assert_allclose(g, g.T)
    np.testing.assert_array_equal(window_weights((4, 6), "uniform"), np.ones((4, 6)))


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_image_smaller_than_the_window_is_padded_and_cropped(pad_mode):
    img = image(20, 13)
    seen = []

    def record(batch):
        seen.append(batch[0].copy())
        return pointwise(batch)

    out = sliding_window_predict(record, img, window=32, pad_mode=pad_mode, batch_size=2)
    assert out.shape == (20, 13, 2)
    np.testing.assert_array_equal(out, pointwise(img[None])[0])
    window = seen[0]
    np.testing.assert_array_equal(window[:20, :13], img)
    if pad_mode == "constant":
        assert np.all(window[20:] == 0) and np.all(window[:, 13:] == 0)
    else:
        np.testing.assert_array_equal(window[20, :13], img[18])  # reflection about the last row
        np.testing.assert_array_equal(window[:20, 13], img[:, 11])


def test_one_axis_smaller_than_the_window():
    img = image(10, 70)
    out = sliding_window_predict(pointwise, img, window=16, overlap=0.5)
    np.testing.assert_array_equal(out, pointwise(img[None])[0])


def test_bad_arguments_raise():
    img = image(8, 8)
    with pytest.raises(ValueError, match="weighting"):
        sliding_window_predict(pointwise, img, window=4, weighting="cosine")
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(pointwise, img, window=4, overlap=1.0)
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        sliding_window_predict(pointwise, img[..., 0], window=4)
    with pytest.raises(ValueError, match="predict_fn must return"):
        sliding_window_predict(lambda b: b[:, ::2], img, window=4)
