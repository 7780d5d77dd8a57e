"""Read ``.npz`` files whose object arrays hold plain data (D2-Net's MegaDepth ``scene_info``) without executing
arbitrary pickled code: object arrays are decoded by an unpickler that only builds lists, dicts, tuples, strings,
numbers and numpy arrays/dtypes/scalars, like ``torch.load(weights_only=True)``. Anything else is refused."""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
from numpy.lib import format as npformat

from ..errors import ImpError

_ALLOWED = {
    ("builtins", n) for n in ("list", "dict", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
                              "float", "complex", "bool", "slice")
} | {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class UnsafePickleError(ImpError, ValueError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module.startswith("numpy") and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to unpickle {module}.{name}: only plain data and numpy arrays are allowed")


def _read_member(fp, where: str) -> np.ndarray:
    version = npformat.read_magic(fp)
    shape, fortran, dtype = (npformat.read_array_header_1_0(fp) if version == (1, 0)
                             else npformat.read_array_header_2_0(fp))
    if not dtype.hasobject:
        count = int(np.prod(shape)) if shape else 1
        data = np.frombuffer(fp.read(count * dtype.itemsize), dtype=dtype, count=count)
        return data.reshape(shape[::-1]).T if fortran else data.reshape(shape)
    try:
        arr = _RestrictedUnpickler(fp).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{where}: {e}") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{where}: object array payload is {type(arr).__name__}, not an array")
    return arr


def load_npz(path) -> Dict[str, Any]:
    """{name: array} of an ``.npz`` (object arrays decoded with the restricted unpickler)."""
    path = Path(path)
    out: Dict[str, Any] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as f:
                    out[member[:-4]] = _read_member(io.BytesIO(f.read()), f"{path}:{member}")
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is not an npz archive: {e}") from e
    return out
