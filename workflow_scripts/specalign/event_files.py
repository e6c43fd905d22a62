"""Safe loading of DSEC-style event files: a pickled dict of x, y, t, p arrays in a .npy.

``event_npy/{seq}/{clip}.npy`` holds a pickled dict (np.save of a dict), and
unpickling runs whatever callables the file names. load_event_file reads it
through an unpickler that allows only numpy's array/scalar/dtype helpers, so
an event file from the internet cannot run code; it validates the x, y, t, p
arrays and names the file in every error.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class EventFileError(ValueError):
    """An event file that is not a readable dict of x, y, t, p arrays (names the file)."""


class UnsafePickleError(EventFileError):
    """An event file whose pickle asks for a global outside the numpy allow-list."""


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Protocol-2 pickles (Python-2-era files) store bytes as
    # _codecs.encode(text, "latin1"); only that exact use is honoured.
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(obj, "latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = np._core.multiarray
    numeric = np._core.numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    # numpy >= 2 writes numpy._core.*; files written by numpy 1.x say
    # numpy.core.*. Both names resolve to the same (numpy 2) objects, without
    # importing the deprecated numpy.core alias.
    for pkg in ("numpy._core", "numpy.core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct   # ndarray pickles
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar               # numpy scalars
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer           # protocol-5 ndarrays
    return allowed


ALLOWED_PICKLE_GLOBALS: dict[tuple[str, str], Any] = _allowed_globals()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays/scalars/dtypes, nothing else.

    Unpickling calls whatever callables the file names, so an event file from
    the internet could run code under ``np.load(allow_pickle=True)``. Every
    global a pickle references goes through find_class; refusing all but the
    numpy reconstruction helpers leaves only data-building operations.
    """

    def __init__(self, fh, path: Path):
        super().__init__(fh)
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refused to unpickle global {module}.{name} "
                f"(event files may only contain numpy arrays, scalars and plain containers)"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: refused persistent id {pid!r} in pickle")


def _read_npy_payload(path: Path) -> Any:
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            # 3.0 differs from 2.0 only in the header text's encoding (utf8).
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _fortran, dtype = header(fh)
        except ValueError as exc:
            raise EventFileError(f"{path}: not a .npy file: {exc}") from exc
        if not dtype.hasobject:
            raise EventFileError(
                f"{path}: holds a plain {dtype} array of shape {shape}, expected a pickled dict of x, y, t, p"
            )
        try:
            obj = _NumpyOnlyUnpickler(fh, path).load()
        except UnsafePickleError:
            raise
        except Exception as exc:  # truncated or garbled pickles raise many types
            raise EventFileError(f"{path}: corrupt pickle payload: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object:
        obj = obj.item()                  # np.save(dict) wraps the dict in a 0-d object array
    return obj


def load_event_file(path: str | Path) -> dict:
    """Read a DSEC-style event .npy (a pickled dict) without running its code.

    Returns the dict with ``x, y, t, p`` as numpy arrays (validated: present,
    1-D, numeric, one length) and every other key as stored. Raises
    EventFileError (a ValueError) naming the file, or UnsafePickleError when
    the pickle references anything but numpy array/scalar/dtype helpers.
    """
    path = Path(path)
    if not path.is_file():
        raise EventFileError(f"{path}: event file does not exist")
    obj = _read_npy_payload(path)
    if not isinstance(obj, dict):
        raise EventFileError(f"{path}: expected a dict of event arrays, found {type(obj).__name__}")
    missing = [k for k in ("x", "y", "t", "p") if k not in obj]
    if missing:
        raise EventFileError(f"{path}: event dict lacks keys {missing} (has {sorted(map(str, obj))})")
    out = dict(obj)
    lengths = {}
    for k in ("x", "y", "t", "p"):
        arr = np.asarray(obj[k])
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise EventFileError(f"{path}: '{k}' must be a 1-D numeric array, got {arr.dtype} shape {arr.shape}")
        out[k] = arr
        lengths[k] = arr.shape[0]
    if len(set(lengths.values())) != 1:
        raise EventFileError(f"{path}: x, y, t, p lengths differ: {lengths}")
    return out
