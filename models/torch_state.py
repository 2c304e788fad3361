"""Reads the tensors of a legacy (non-zip) `torch.save` file as numpy arrays, without torch and
without running code from the file.

A .pth file is a pickle, and a pickle can call any importable function while it loads. So the
unpickler here resolves only an allowlist of names (torch's storage types, its tensor rebuild
function, OrderedDict) to harmless stand-ins of its own: a crafted file cannot run anything, and a
name outside the list stops the load with an UnsafePickleError that names it.

The legacy layout, as torch/serialization.py writes it (`_legacy_save`): five pickles in a row -
a magic number, the protocol version (1001), a dict of system facts (byte order, type sizes), the
object itself (tensors in it refer to storages by persistent id), the list of storage keys - then,
for each key in that order, the storage's element count as an 8-byte integer followed by its raw
elements. A persistent id is ("storage", storage type, key, location, element count,
view metadata), the metadata being None or (view key, element offset, view size) for a view into
another storage. `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
backward_hooks[, metadata])` makes each tensor: offset and strides are counted in elements.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any, BinaryIO, NamedTuple

import numpy as np

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# Storage classes of torch.save's legacy format and the numpy type of their elements. BFloat16 has
# no numpy type; a file with it is refused by name (it is outside the allowlist).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global outside the allowlist: loading it could run arbitrary code."""


class TorchFormatError(ValueError):
    """The file is not a legacy torch.save file of tensors, or it is damaged."""


# The stand-ins are named tuples: immutable, without __dict__ or __setstate__, so a crafted BUILD
# opcode cannot alter one (a frozen dataclass is not enough: BUILD writes its __dict__ directly).
class _StorageType(NamedTuple):
    """Stands in for torch.<X>Storage in the unpickled object; it only knows its element type."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


class _StorageRef(NamedTuple):
    """A storage the object refers to: its root key in the data section and where a view starts."""

    key: str
    storage_type: _StorageType
    numel: int
    offset: int = 0  # of a view, in elements of its root storage


class _TensorRef(NamedTuple):
    """A tensor whose data comes after the object pickle, so it is made into an array later."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _counts(*values: Any) -> bool:
    """Whether every value is a non-negative int (an offset, extent, stride or element count)."""
    return all(type(value) is int and value >= 0 for value in values)


class _RebuildTensor:
    """Stands in for torch._utils._rebuild_tensor_v2: records where the tensor is, reads nothing.
    (An object without attributes rather than a function, whose attributes BUILD could set.)"""

    __slots__ = ()

    def __call__(self, storage, storage_offset, size, stride, requires_grad=False,
                 backward_hooks=None, metadata=None) -> _TensorRef:
        del requires_grad, backward_hooks, metadata  # training state, not data
        if (type(storage) is not _StorageRef or type(size) is not tuple
                or type(stride) is not tuple or len(size) != len(stride)
                or not _counts(storage_offset, *size, *stride)):
            raise TorchFormatError(f"malformed tensor record: storage={storage!r} "
                                   f"offset={storage_offset!r} size={size!r} stride={stride!r}")
        return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor(),
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _AllowlistUnpickler(pickle.Unpickler):
    """Resolves only `allowed` globals. With `storages` (the object pickle), persistent ids become
    _StorageRef and the root storages they name are collected in `roots`."""

    def __init__(self, file: BinaryIO, allowed: dict, storages: bool):
        super().__init__(file)
        self._allowed = allowed
        self._storages = storages
        self.roots: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: only torch storages, "
                f"torch._utils._rebuild_tensor_v2 and collections.OrderedDict are allowed (a file "
                f"that needs anything else could run code when unpickled)") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not self._storages:
            raise TorchFormatError(f"unexpected persistent id {pid!r} outside the object pickle")
        if (type(pid) is not tuple or len(pid) != 6 or pid[0] != "storage"
                or type(pid[1]) is not _StorageType or type(pid[2]) is not str
                or not _counts(pid[4])):
            raise TorchFormatError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, view = pid
        root = self.roots.setdefault(key, _StorageRef(key, storage_type, numel))
        if root != (key, storage_type, numel, 0):
            raise TorchFormatError(f"storage {key} is described twice, differently")
        if view is None:
            return root
        if (type(view) is not tuple or len(view) != 3 or not _counts(*view[1:])
                or view[1] + view[2] > numel):
            raise TorchFormatError(f"storage {key}: unsupported view {view!r}")
        _view_key, offset, view_numel = view
        return _StorageRef(key, storage_type, view_numel, offset)


def _read_plain(file: BinaryIO) -> Any:
    """One of the header pickles: plain data, so no global at all is allowed."""
    return _AllowlistUnpickler(file, {}, storages=False).load()


def _read_storages(file: BinaryIO, keys: list[str], refs: dict[str, _StorageRef],
                   byteorder: str) -> dict[str, np.ndarray]:
    """The data section: each root storage in `keys` order, an 8-byte element count then data."""
    data = {}
    for key in keys:
        header = file.read(8)
        if len(header) != 8:
            raise TorchFormatError(f"file ends before storage {key}")
        numel = int.from_bytes(header, byteorder, signed=True)
        if numel != refs[key].numel:
            raise TorchFormatError(f"storage {key}: the data section says {numel} elements, the "
                                   f"object pickle {refs[key].numel}")
        dtype = refs[key].storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
        raw = file.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise TorchFormatError(f"storage {key}: expected {numel} elements, file is truncated")
        data[key] = np.frombuffer(raw, dtype)
    return data


def _materialise(tensor: _TensorRef, data: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The array a tensor record describes: respects offset, shape and strides, returns a
    contiguous copy in native byte order."""
    storage = data[tensor.storage.key]
    start = tensor.storage.offset + tensor.offset
    last = start + sum((extent - 1) * step for extent, step in zip(tensor.shape, tensor.strides))
    end = tensor.storage.offset + tensor.storage.numel  # of the view (or the whole storage)
    if 0 not in tensor.shape and last >= min(end, storage.size):
        raise TorchFormatError(f"tensor {name} reaches element {last} of storage "
                               f"{tensor.storage.key}, which ends at {min(end, storage.size)}")
    view = np.lib.stride_tricks.as_strided(
        storage[start:], shape=tensor.shape,
        strides=tuple(step * storage.itemsize for step in tensor.strides), writeable=False)
    return np.array(view, dtype=storage.dtype.newbyteorder("="), order="C")


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The name -> array mapping a legacy torch.save file of a state dict holds.

    Raises UnsafePickleError for a global outside the allowlist (before anything is called) and
    TorchFormatError for any other file (the zip format of torch >= 1.6 included)."""
    if zipfile.is_zipfile(path):
        raise TorchFormatError(f"{path} is a zip-format torch.save file; only the legacy format "
                               f"(torch < 1.6, or _use_new_zipfile_serialization=False) is read")
    with open(path, "rb") as file:
        try:
            magic = _read_plain(file)
            if magic != _MAGIC_NUMBER:
                raise TorchFormatError(f"{path} is not a legacy torch.save file (magic {magic!r})")
            version = _read_plain(file)
            if version != _PROTOCOL_VERSION:
                raise TorchFormatError(f"{path}: unsupported protocol version {version!r}")
            system = _read_plain(file)
            byteorder = "little" if system.get("little_endian", True) else "big"
            unpickler = _AllowlistUnpickler(file, _ALLOWED_GLOBALS, storages=True)
            state = unpickler.load()
            refs = unpickler.roots
            keys = _read_plain(file)
        except (UnsafePickleError, TorchFormatError):
            raise
        except (EOFError, pickle.UnpicklingError, AttributeError, TypeError, ValueError,
                IndexError, KeyError) as error:
            raise TorchFormatError(
                f"{path} is damaged or not a torch.save file: {error}") from error
        if (not isinstance(state, dict) or type(keys) is not list
                or not all(type(key) is str for key in keys)):
            raise TorchFormatError(f"{path} does not hold a state dict")
        missing = set(keys) - set(refs)
        if missing:
            raise TorchFormatError(f"{path}: storages {sorted(missing)[:5]} have no element type")
        data = _read_storages(file, keys, refs, byteorder)
    arrays = {}
    for name, tensor in state.items():
        if type(name) is not str or type(tensor) is not _TensorRef:
            raise TorchFormatError(f"{path}: entry {name!r} is not a tensor")
        if tensor.storage.key not in data:
            raise TorchFormatError(f"{path}: tensor {name} refers to missing storage "
                                   f"{tensor.storage.key}")
        arrays[name] = _materialise(tensor, data, name)
    return arrays
