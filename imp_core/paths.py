"""Paths built from names found in data (map models, image lists, bags, parameters) stay inside their directory.

A name such as ``../../../ESCAPED`` in a COLMAP model or a query list must not make imp write (or read) outside
the directory it works in; ``safe_join(root, name)`` is the one place that check happens.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Union

from .errors import ImpError

PathLike = Union[str, "os.PathLike[str]"]


class UnsafePathError(ImpError, ValueError):
    """A name that would leave its directory (absolute, ``..``, NUL byte or empty)."""


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a relative path without ``..`` components; else UnsafePathError naming it."""
    s = os.fspath(name)
    if not isinstance(s, str):
        s = s.decode("utf-8", "replace")
    if not s or "\x00" in s:
        raise UnsafePathError(f"{what} {s!r} is empty or contains a NUL byte")
    parts = PurePosixPath(s.replace("\\", "/")).parts
    if s.startswith(("/", "\\")) or os.path.isabs(s) or (parts and ":" in parts[0] and os.name == "nt"):
        raise UnsafePathError(f"{what} {s!r} is an absolute path; expected a path relative to its directory")
    if ".." in parts:
        raise UnsafePathError(f"{what} {s!r} contains '..' and would leave its directory")
    return s


def safe_join(root: PathLike, *names: str, what: str = "name") -> Path:
    """``root / name1 / name2 ...`` after checking that every name stays inside ``root`` (lexically: a symlink
    the user placed inside ``root`` is theirs to follow). Raises UnsafePathError with the offending name."""
    root = Path(root)
    out = root
    for n in names:
        out = out / check_name(n, what)
    norm_root = os.path.normpath(os.path.abspath(root))
    norm = os.path.normpath(os.path.abspath(out))
    if norm != norm_root and not norm.startswith(norm_root.rstrip(os.sep) + os.sep):
        raise UnsafePathError(f"{what} {'/'.join(names)!r} resolves to {norm}, outside {norm_root}")
    return out
