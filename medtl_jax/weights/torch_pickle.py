"""Read PyTorch checkpoints (``.pth``/``.pt``) into numpy arrays without importing torch.

The runtime install has no torch, yet ImageNet weights ship as torch pickles. Two on-disk formats exist:

* zip (torch >= 1.6): ``<prefix>/data.pkl`` is the pickled object; tensor storages live in
  ``<prefix>/data/<key>``; ``<prefix>/byteorder`` says the storage byte order (absent = little).
* legacy (torch < 1.6, or ``_use_new_zipfile_serialization=False``): a stream of pickles -- magic number,
  protocol version, sys_info, the object, the list of storage keys -- then each storage as an 8-byte
  little-endian element count followed by its raw bytes.

In both, a tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
and the storage as a persistent id ``('storage', StorageType, key, location, numel[, view_metadata])``.
Unpickling uses an allow-list: the torch rebuild functions, the storage types and
``collections.OrderedDict``; any other global is refused, so a checkpoint cannot run code.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy element type.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}

# Keys under which training scripts commonly nest the state dict.
WRAPPER_KEYS = ("state_dict", "model")


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends during unpickling."""

    name: str
    dtype: np.dtype


@dataclasses.dataclass
class _Storage:
    """A flat typed buffer; ``data`` is filled when the bytes are read (after unpickling, in legacy files)."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None
    root: _Storage | None = None  # legacy storage views share their root's buffer
    root_offset: int = 0

    def array(self) -> np.ndarray:
        """The flat element buffer of this storage (a slice of the root for a view)."""
        if self.root is not None:
            return self.root.array()[self.root_offset:self.root_offset + self.numel]
        if self.data is None:
            raise ValueError("tensor storage was never read (file truncated?)")
        return self.data


@dataclasses.dataclass
class _TensorRef:
    """A tensor to materialise once its storage bytes are available."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride):
    """Mirror of ``torch._utils._rebuild_tensor``: records the view, materialised later."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor rebuilt from a non-storage {type(storage).__name__}")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Mirror of ``torch._utils._rebuild_tensor_v2``; autograd flags and hooks are dropped."""
    del requires_grad, backward_hooks, metadata
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Mirror of ``torch._utils._rebuild_parameter``: a Parameter is just its data here."""
    del requires_grad, backward_hooks
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    """Mirror of ``torch._utils._rebuild_parameter_with_state``; the Python state is dropped."""
    del requires_grad, backward_hooks, state
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", STORAGE_DTYPES["UntypedStorage"]),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and turns storage ids into ``_Storage``s."""

    def __init__(self, file, storage_factory=None):
        super().__init__(file, encoding="latin1")
        self._storage_factory = storage_factory

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name} "
                                         "(only tensors and OrderedDicts are allowed)") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storage_factory is None:
            raise pickle.UnpicklingError("unexpected persistent id outside the object pickle")
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"malformed persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id kind {kind!r}")
        return self._storage_factory(pid[1:])


def _restricted_load(file, storage_factory=None) -> Any:
    """Unpickle one object from ``file`` with the allow-list."""
    return _RestrictedUnpickler(file, storage_factory).load()


def _storage_dtype(storage_type: Any) -> np.dtype:
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    return storage_type.dtype


def _from_bytes(raw: bytes, dtype: np.dtype, little_endian: bool) -> np.ndarray:
    """Interpret raw storage bytes as a flat array in native (little-endian) order."""
    if len(raw) % dtype.itemsize:
        raise ValueError(f"storage of {len(raw)} bytes is not a whole number of {dtype} elements")
    if little_endian or dtype.itemsize == 1:
        return np.frombuffer(raw, dtype=dtype)
    if dtype.kind == "c":
        raise ValueError("big-endian complex storages are not supported")
    swapped = np.frombuffer(raw, dtype=np.dtype(f">u{dtype.itemsize}")).astype(f"<u{dtype.itemsize}")
    return swapped.view(dtype)


def _materialise(ref: _TensorRef) -> np.ndarray:
    """Copy a (possibly strided, offset) tensor view out of its storage into a contiguous array."""
    flat = ref.storage.array()
    if len(ref.size) != len(ref.stride):
        raise ValueError(f"tensor size {ref.size} and stride {ref.stride} disagree")
    if any(s == 0 for s in ref.size):
        return np.zeros(ref.size, dtype=flat.dtype)
    if any(st < 0 for st in ref.stride) or ref.offset < 0:
        raise ValueError("negative tensor stride or offset")
    last = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride))
    if last >= flat.size:
        raise ValueError(f"tensor view reaches element {last} of a storage with {flat.size} (truncated?)")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.size, strides=tuple(st * flat.itemsize for st in ref.stride),
        writeable=False)
    return np.array(view, order="C", copy=True)


def _resolve(obj: Any) -> Any:
    """Replace every ``_TensorRef`` in nested dicts/lists/tuples by its numpy array."""
    if isinstance(obj, _TensorRef):
        return _materialise(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _load_zip(path: os.PathLike | str) -> Any:
    """Unpickle a torch >= 1.6 zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pickles) != 1:
            raise ValueError("zip archive has no single '<prefix>/data.pkl' (not a torch checkpoint?)")
        prefix = pickles[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            little = archive.read(prefix + "byteorder").decode().strip() != "big"
        storages: dict[str, _Storage] = {}

        def storage_factory(args: tuple) -> _Storage:
            storage_type, key, _location, numel = args[:4]
            key = str(key)
            if key not in storages:
                dtype = _storage_dtype(storage_type)
                data = _from_bytes(archive.read(f"{prefix}data/{key}"), dtype, little)
                storages[key] = _Storage(dtype, int(numel), data)
            return storages[key]

        return _restricted_load(io.BytesIO(archive.read(pickles[0])), storage_factory)


def _load_legacy(path: os.PathLike | str) -> Any:
    """Unpickle a pre-1.6 (non-zip) checkpoint: pickle stream, then raw storages."""
    with open(path, "rb") as f:
        magic = _restricted_load(f)
        if magic != LEGACY_MAGIC_NUMBER:
            raise ValueError("bad magic number (not a torch checkpoint)")
        protocol = _restricted_load(f)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise ValueError(f"unsupported legacy protocol version {protocol!r}")
        sys_info = _restricted_load(f)
        little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
        storages: dict[str, _Storage] = {}

        def storage_factory(args: tuple) -> _Storage:
            storage_type, root_key, _location, numel, view_metadata = args
            dtype = _storage_dtype(storage_type)
            root_key = str(root_key)
            if root_key not in storages:
                storages[root_key] = _Storage(dtype, int(numel))
            root = storages[root_key]
            if view_metadata is None:
                return root
            view_key, offset, view_size = view_metadata
            view_key = str(view_key)
            if view_key not in storages:
                storages[view_key] = _Storage(dtype, int(view_size), root=root, root_offset=int(offset))
            return storages[view_key]

        result = _restricted_load(f, storage_factory)
        keys = _restricted_load(f)
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise ValueError(f"storage {key!r} listed but never referenced")
            header = f.read(8)
            if len(header) != 8:
                raise ValueError(f"file ends before storage {key!r} (truncated)")
            (count,) = struct.unpack("<q" if little else ">q", header)
            if count != storage.numel:
                raise ValueError(f"storage {key!r} has {count} elements, expected {storage.numel}")
            raw = f.read(count * storage.dtype.itemsize)
            if len(raw) != count * storage.dtype.itemsize:
                raise ValueError(f"file ends inside storage {key!r} (truncated)")
            storage.data = _from_bytes(raw, storage.dtype, little)
        return result


def _unwrap(obj: Any) -> Any:
    """Return the state dict inside ``{'state_dict': ...}`` / ``{'model': ...}`` checkpoints."""
    while isinstance(obj, dict):
        inner = [obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        if not inner:
            break
        obj = inner[0]
    return obj


def load_torch_state_dict(path: os.PathLike | str) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict file into ``{name: numpy array}`` (contiguous copies, torch's order).

    Accepts the zip and the legacy format, and checkpoints that wrap the state dict under
    ``'state_dict'`` or ``'model'``. Raises ``ValueError("<path>: ...")`` for missing, truncated,
    corrupt or non-torch files and for pickles that reference anything other than tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
        obj = _resolve(_unwrap(obj))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    except Exception as e:  # noqa: BLE001 - any failure to parse a foreign file means "unreadable"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{path}: state dict entries that are not tensors: {bad[:10]}")
    return {str(k): v for k, v in obj.items()}
