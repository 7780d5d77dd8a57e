"""Names from a map, list or bag never make imp write outside its output directory (issue 11: `imp instances` wrote
masks for an image named ../../../ESCAPED outside the map)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from imp_core.paths import UnsafePathError, check_name, safe_join


@pytest.mark.parametrize("name", ["../x.png", "a/../../x", "/etc/passwd", "", "a\x00b", "..", "a/..", "..\\..\\x"])
def test_safe_join_refuses_escaping_names(tmp_path, name):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, name)


@pytest.mark.parametrize("name", ["db/0003.png", "query/night/nexus5x/a.jpg", "a..b.png", ".hidden", "x"])
def test_safe_join_keeps_relative_names(tmp_path, name):
    assert safe_join(tmp_path, name) == tmp_path / name
    assert check_name(name) == name


def _rename_image(map_dir: Path, old: str, new: str) -> None:
    """Rename one database image everywhere a map stores names (COLMAP model, features.h5, global.npz)."""
    import h5py
    import pycolmap

    from imp_core.mapping.features_io import h5_key

    rec = pycolmap.Reconstruction(str(map_dir / "reconstruction"))
    img = next(i for i in rec.images.values() if i.name == old)
    img.name = new
    rec.write(str(map_dir / "reconstruction"))
    with h5py.File(map_dir / "features.h5", "a") as f:
        f.move(h5_key(old), h5_key(new))
        f[h5_key(new)].attrs["name"] = new
    g = map_dir / "global.npz"
    if g.is_file():
        with np.load(g, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["names"] = np.array([new if str(n) == old else str(n) for n in arrays["names"]])
        np.savez(g, **arrays)


def test_imp_instances_refuses_escaping_image_name(tiny_map, tmp_path):
    """The issue's reproduction: an image named ../../../ESCAPED in the map; `imp instances` must not write
    ESCAPED.png outside the map directory, and says which name is wrong."""
    from imp_core.cli import main
    from imp_core.mapping import LocalizationMap

    root = tmp_path / "a" / "b" / "c"
    map_dir = root / "map"
    shutil.copytree(tiny_map, map_dir)
    first = sorted(LocalizationMap.load(map_dir).names)[0]
    _rename_image(map_dir, first, "../../../ESCAPED")
    assert "../../../ESCAPED" in LocalizationMap.load(map_dir).names
    code = main(["instances", str(map_dir), "--num-instances", "4"])
    assert code != 0
    escaped = [p for p in tmp_path.rglob("ESCAPED*")]
    assert not escaped, escaped
    assert not (map_dir / "instance_masks").exists() or not any((map_dir / "instance_masks").rglob("*.png"))


def test_imp_instances_error_names_the_image(tiny_map, tmp_path, capsys):
    from imp_core.cli import main
    from imp_core.mapping import LocalizationMap

    map_dir = tmp_path / "map"
    shutil.copytree(tiny_map, map_dir)
    _rename_image(map_dir, sorted(LocalizationMap.load(map_dir).names)[0], "/tmp/ABSOLUTE_ESCAPE")
    assert main(["instances", str(map_dir), "--num-instances", "4"]) != 0
    err = capsys.readouterr().err
    assert "/tmp/ABSOLUTE_ESCAPE" in err
    assert "absolute" in err
    assert not Path("/tmp/ABSOLUTE_ESCAPE.png").exists()


def test_evaluator_report_method_cannot_escape(tmp_path):
    """The evaluator's output file names come from the `method` parameter."""
    from imp_ros.report import write_report

    with pytest.raises(UnsafePathError):
        write_report([], tmp_path / "out", method="../../evil")
