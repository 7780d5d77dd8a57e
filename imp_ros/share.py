"""The package's installed files (config/, launch/, models/): found through the share directory, never through the
current directory or the source tree.

``share_dir()`` is ``ament_index_python``'s ``share/imp`` when the index knows the package (colcon, or the pip
environment with ``AMENT_PREFIX_PATH``), else the ``share/imp`` data files installed next to this module's prefix
(``pip install --prefix``), else ``sys.prefix/share/imp``; an editable install (the module is the source checkout)
falls back to the checkout, which has the same layout.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional, Union

PACKAGE = "imp"


def _candidates() -> List[Path]:
    out: List[Path] = []
    try:
        from ament_index_python.packages import get_package_share_directory

        out.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # ImportError, PackageNotFoundError, or AMENT_PREFIX_PATH unset (OSError/EnvironmentError)
        pass
    here = Path(__file__).resolve()
    # <prefix>/lib/pythonX.Y/site-packages/imp_ros/share.py -> <prefix>/share/imp
    if len(here.parents) > 4 and here.parents[2].name.startswith("python"):
        out.append(here.parents[4] / "share" / PACKAGE)
    out.append(Path(sys.prefix) / "share" / PACKAGE)
    if (here.parents[1] / "package.xml").is_file():  # editable install: the checkout has the installed layout
        out.append(here.parents[1])
    return out


def share_dir() -> Path:
    """The package's share directory (the first candidate with a package.xml)."""
    cands = _candidates()
    for c in cands:
        if (c / "package.xml").is_file():
            return c
    raise FileNotFoundError(f"share directory of package {PACKAGE!r} not found (looked in "
                            f"{', '.join(str(c) for c in cands)}); install the package or set AMENT_PREFIX_PATH")


def package_file(path: Union[str, os.PathLike], what: str = "file", base: Optional[Path] = None) -> Path:
    """Resolve a file named in a parameter or graph YAML: absolute paths as they are; relative ones against
    ``base`` (e.g. the YAML's own folder), then the package share directory (``config/x.yaml``), then the current
    directory (a user's own file). Raises FileNotFoundError naming every place tried."""
    p = Path(os.path.expandvars(str(path))).expanduser()
    if p.is_absolute():
        if p.exists():
            return p
        raise FileNotFoundError(f"{what} {p} not found")
    tried = []
    if base is not None:
        tried.append(Path(base) / p)
    try:
        tried.append(share_dir() / p)
    except FileNotFoundError:
        pass
    tried.append(Path.cwd() / p)
    for c in tried:
        if c.exists():
            return c.resolve()
    raise FileNotFoundError(f"{what} {str(path)!r} not found (looked in {', '.join(str(c.parent) for c in tried)})")
