"""RobotCar Seasons (v2) exactly as downloaded from visuallocalization.net::

    images/overcast-reference/{left,rear,right}/<timestamp>.jpg   database (reference traversal)
    images/<condition>/{left,rear,right}/<timestamp>.jpg          queries: dawn, dusk, night, night-rain,
                                                                  overcast-summer, overcast-winter, rain, snow, sun
    intrinsics/{left,rear,right}_intrinsics.txt                   lines "fx 400.000000", "fy ...", "cx ...", "cy ..."
    extrinsics/{left,rear,right}_extrinsics.txt                   4x4 [R c; 0 1], comma separated: the camera in
                                                                  the car frame (x_car = R x_cam + c)
    3D-models/all-merged/all.nvm                                  reference model (NVM; image names end in .png)
    3D-models/overcast-reference.db                               COLMAP database with the reference intrinsics
    3D-models/individual/colmap_reconstructions/<NNN>_*/          per-submap COLMAP text models (optional reference)
    robotcar_v2_train.txt                                         "<name> <4x4 or 3x4 [R c] row-major>": public
                                                                  query poses (camera-to-world)
    robotcar_v2_test.txt                                          names of the test queries (the scored set):
                                                                  camera/timestamp.png, with or without the
                                                                  condition in front

The reference is read straight from ``all.nvm`` (t = -R c) with the intrinsics of ``overcast-reference.db``
(looked for in ``3D-models/`` and at the root), or from the ``individual`` COLMAP models. Models name images
``.png`` while the files are ``.jpg``: names are mapped to the files on disk everywhere. Query cameras are
``SIMPLE_RADIAL w h f cx cy 0`` from the intrinsics files (or PINHOLE when fx != fy), with the size read from the
image files (1024x1024 in the real data). Result names are ``<camera>/<timestamp>.jpg`` (no condition), stamps come
from the file names (microseconds).

Query sets (``split``): ``test`` (robotcar_v2_test.txt; the default when the file exists), ``train``
(robotcar_v2_train.txt, with ground truth), ``all`` (every image under images/<condition>/, v1 style; ground truth
where the train list has it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..imageio import image_size
from ..types import Camera, Pose
from .base import DatasetError, LocalizationDataset, QueryItem
from .colmap_io import read_database_cameras, read_model_poses
from .nvm import clean_name, read_nvm

CAMERAS = ("left", "rear", "right")
REFERENCE = "overcast-reference"
CONDITIONS = ("dawn", "dusk", "night", "night-rain", "overcast-summer", "overcast-winter", "rain", "snow", "sun")
NVM = Path("3D-models/all-merged/all.nvm")
DATABASES = (Path("3D-models/overcast-reference.db"), Path("overcast-reference.db"))
INDIVIDUAL = Path("3D-models/individual/colmap_reconstructions")
TRAIN_LIST = Path("robotcar_v2_train.txt")
TEST_LIST = Path("robotcar_v2_test.txt")
SPLITS = ("test", "train", "all")
REFERENCES = ("nvm", "individual")
DEFAULT_SIZE = 1024


def intrinsics_path(root, cam: str) -> Path:
    return Path(root) / "intrinsics" / f"{cam}_intrinsics.txt"


def extrinsics_path(root, cam: str) -> Path:
    return Path(root) / "extrinsics" / f"{cam}_extrinsics.txt"


def is_robotcar(root) -> bool:
    root = Path(root)
    return (root / "images").is_dir() and any(intrinsics_path(root, c).is_file() for c in CAMERAS)


def diagnose(root) -> Optional[str]:
    """For a directory that looks like RobotCar Seasons but is not complete: what is missing, where we looked."""
    root = Path(root)
    hints = [p for p in ("images/overcast-reference", "intrinsics", "extrinsics", str(NVM), "robotcar_v2_test.txt")
             if (root / p).exists()]
    if not hints or is_robotcar(root):
        return None
    missing = []
    if not (root / "images").is_dir():
        missing.append(f"{root / 'images'}/ (the extracted image archives: images/<condition>/<camera>/*.jpg)")
    if not any(intrinsics_path(root, c).is_file() for c in CAMERAS):
        missing.append(f"{root / 'intrinsics'}/{{{','.join(CAMERAS)}}}_intrinsics.txt")
    return f"RobotCar Seasons (found {', '.join(hints)}) is missing " + " and ".join(missing)


def _numbers(line: str) -> List[float]:
    return [float(v) for v in line.replace(",", " ").split()]


def query_camera(fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> Camera:
    """The camera of RobotCar intrinsics: SIMPLE_RADIAL with k = 0 (as hloc), or PINHOLE if fx != fy."""
    if abs(fx - fy) <= 1e-6 * abs(fx):
        return Camera("SIMPLE_RADIAL", width, height, np.array([fx, cx, cy, 0.0]))
    return Camera("PINHOLE", width, height, np.array([fx, fy, cx, cy]))


def read_intrinsics(path, size: Optional[Tuple[int, int]] = None) -> Camera:
    """``key value`` lines (fx, fy, cx, cy[, width, height]) -> SIMPLE_RADIAL (k = 0), or PINHOLE if fx != fy.
    The size comes from ``width``/``height`` lines, else ``size``, else 1024x1024."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RobotCar intrinsics file {path} does not exist")
    vals: Dict[str, float] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.replace(":", " ").split()
        if not tok:
            continue
        try:
            vals[tok[0].lower()] = float(tok[1])
        except (IndexError, ValueError):
            raise DatasetError(f"{path}:{i}: expected 'key value' (e.g. 'fx 400.0'), got {line!r}") from None
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in vals]
    if missing:
        raise DatasetError(f"{path}: missing {', '.join(missing)}")
    w, h = size or (DEFAULT_SIZE, DEFAULT_SIZE)
    w, h = int(vals.get("width", w)), int(vals.get("height", h))
    try:
        return query_camera(vals["fx"], vals["fy"], vals["cx"], vals["cy"], w, h)
    except ValueError as e:
        raise DatasetError(f"{path}: {e}") from None


def write_intrinsics(path, cam: Camera) -> Path:
    """The four lines of the real files (no size: readers take it from the images)."""
    (fx, fy), (cx, cy) = cam.focal, cam.principal_point
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"fx {fx:.6f}\nfy {fy:.6f}\ncx {cx:.6f}\ncy {cy:.6f}\n")
    return path


def _rigid(M: np.ndarray) -> Optional[Pose]:
    """``[R c]`` (the first 3 rows of M) -> Pose(R, c) with R re-orthonormalised; None unless R is a rotation."""
    R = M[:3, :3]
    if not np.all(np.isfinite(M[:3])) or not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        return None
    U, _, Vt = np.linalg.svd(R)
    return Pose(U @ Vt, M[:3, 3])


def read_extrinsics(path) -> Pose:
    """4x4 ``[R c; 0 1]`` (comma or space separated) -> car_from_camera."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RobotCar extrinsics file {path} does not exist")
    try:
        rows = [_numbers(ln) for ln in path.read_text().splitlines() if ln.strip()]
        M = np.array(rows, dtype=np.float64)
    except ValueError:
        raise DatasetError(f"{path}: expected a 4x4 matrix of numbers separated by ','") from None
    if M.shape not in ((4, 4), (3, 4)):
        raise DatasetError(f"{path}: expected a 4x4 matrix [R c; 0 1], got shape {M.shape}")
    car_from_cam = _rigid(M)
    if car_from_cam is None:
        raise DatasetError(f"{path}: the upper-left 3x3 block is not a rotation")
    return car_from_cam


def write_extrinsics(path, car_from_cam: Pose) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    M = car_from_cam.matrix
    path.write_text("\n".join(",".join(f"{v:.9f}" for v in row) for row in M) + "\n")
    return path


def read_train_list(path) -> Dict[str, Pose]:
    """``robotcar_v2_train.txt``: name + 12 or 16 numbers (row-major [R c], camera-to-world) -> {list name with
    .jpg: cam_from_world}."""
    path = Path(path)
    out: Dict[str, Pose] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        if len(tok) not in (13, 17):
            raise DatasetError(f"{path}:{i}: expected 'name' + 12 or 16 matrix values, got {len(tok) - 1} values")
        try:
            M = np.array([float(v) for v in tok[1:13]]).reshape(3, 4)
        except ValueError:
            raise DatasetError(f"{path}:{i}: non-numeric pose for {tok[0]!r}") from None
        world_from_cam = _rigid(M)
        if world_from_cam is None:
            raise DatasetError(f"{path}:{i}: the 3x3 block of {tok[0]!r} is not a rotation")
        out[_jpg(tok[0])] = world_from_cam.inverse()
    return out


def write_train_list(path, poses: Dict[str, Pose]) -> Path:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for name, cam_from_world in poses.items():
            M = cam_from_world.inverse().matrix
            f.write(name + " " + " ".join(f"{v:.10f}" for v in M.reshape(-1)) + "\n")
    return path


def read_name_list(path) -> List[str]:
    path = Path(path)
    return [_jpg(ln.split()[0]) for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _jpg(name: str) -> str:
    name = clean_name(name)
    return name[:-4] + ".jpg" if name.lower().endswith(".png") else name


def result_name(list_name: str) -> str:
    """``night/rear/123.jpg`` -> ``rear/123.jpg`` (the benchmark's submission names: camera/timestamp)."""
    p = Path(list_name)
    return f"{p.parent.name}/{p.name}"


class RobotCarDataset(LocalizationDataset):
    kind = "robotcar"

    def __init__(self, root, cameras: Sequence[str] = CAMERAS, split: Optional[str] = None,
                 reference: str = "nvm") -> None:
        super().__init__(Path(root))
        if not (self.root / "images").is_dir():
            raise DatasetError(f"{self.root / 'images'} does not exist (RobotCar Seasons layout: "
                               "images/<condition>/<camera>/<timestamp>.jpg)")
        self.cameras = [c for c in cameras if intrinsics_path(self.root, c).is_file()]
        if not self.cameras:
            raise DatasetError(f"no intrinsics/{{{','.join(cameras)}}}_intrinsics.txt in {self.root}")
        if reference not in REFERENCES:
            raise ValueError(f"unknown RobotCar reference {reference!r}; choose from {REFERENCES}")
        self.reference = reference
        if split is None:
            split = "test" if (self.root / TEST_LIST).is_file() else "all"
        if split not in SPLITS:
            raise ValueError(f"unknown RobotCar query split {split!r}; choose from {SPLITS}")
        self.split = split
        self._intr: Dict[str, Camera] = {}
        self._train: Optional[Dict[str, Pose]] = None
        self._model_names: Dict[str, str] = {}  # file name (.jpg) -> name in the model (.png)
        self._where: Optional[Dict[Tuple[str, str], str]] = None  # (camera, file name) -> condition folder

    # ---------------------------------------------------------------- cameras
    def camera_intrinsics(self, cam: str) -> Camera:
        """The query camera of ``cam`` (size from the first image of that camera found on disk)."""
        if cam not in self._intr:
            if cam not in self.cameras:
                raise DatasetError(f"no intrinsics for camera {cam!r} ({intrinsics_path(self.root, cam)})")
            size = None
            for d in sorted((self.root / "images").iterdir()):
                first = next(iter(sorted((d / cam).glob("*.jpg"))), None) if (d / cam).is_dir() else None
                if first is not None:
                    size = image_size(first)
                    break
            self._intr[cam] = read_intrinsics(intrinsics_path(self.root, cam), size)
        return self._intr[cam]

    @property
    def extrinsics(self) -> Dict[str, Pose]:
        """{camera: car_from_camera} for the cameras with an extrinsics file."""
        return {c: read_extrinsics(extrinsics_path(self.root, c)) for c in self.cameras
                if extrinsics_path(self.root, c).is_file()}

    # ---------------------------------------------------------------- reference model
    def database_path(self) -> Path:
        for rel in DATABASES:
            if (self.root / rel).is_file():
                return self.root / rel
        raise DatasetError("RobotCar reference intrinsics: overcast-reference.db not found (looked for "
                           + " and ".join(str(self.root / r) for r in DATABASES) + ")")

    @property
    def reference_model_dir(self) -> Path:
        return self.root / (NVM.parent if self.reference == "nvm" else INDIVIDUAL)

    @property
    def image_root(self) -> Path:
        return self.root / "images"

    def file_name(self, model_name: str) -> str:
        """A model's image name -> the name of the file under images/ (``.png`` models, ``.jpg`` files)."""
        model_name = clean_name(model_name)
        if self.image_file(model_name).is_file():
            return model_name
        return _jpg(model_name)

    def _reference(self) -> Dict[str, Tuple[Camera, Pose]]:
        if self._db is None:
            raw = self._read_nvm_reference() if self.reference == "nvm" else self._read_individual_reference()
            self._db = {}
            for name, (cam, pose) in raw.items():
                fname = self.file_name(name)
                self._model_names[fname] = name
                self._db[fname] = (cam, pose)
            self._check_images(self._db)
        return self._db

    def _read_nvm_reference(self) -> Dict[str, Tuple[Camera, Pose]]:
        nvm = self.root / NVM
        if not nvm.is_file():
            alt = self.root / INDIVIDUAL
            raise DatasetError(f"RobotCar reference model {nvm} does not exist"
                               + (f" (or use the individual models in {alt}: reference='individual')"
                                  if alt.is_dir() else ""))
        db_path = self.database_path()
        cams = read_database_cameras(db_path)
        model = read_nvm(nvm)
        out = {}
        for im in model.images:
            cam = cams.get(im.name) or cams.get(_jpg(im.name))
            if cam is None:
                raise DatasetError(f"{nvm}: image {im.name!r} is not in {db_path} (no intrinsics for it)")
            out[im.name] = (cam, im.pose)
        if not out:
            raise DatasetError(f"{nvm} holds no images")
        return out

    def _read_individual_reference(self) -> Dict[str, Tuple[Camera, Pose]]:
        base = self.root / INDIVIDUAL
        if not base.is_dir():
            raise DatasetError(f"RobotCar individual models: {base} does not exist")
        zips = sorted(base.glob("*.zip"))
        dirs = sorted(d for d in base.iterdir() if d.is_dir() and any(
            (d / f).is_file() for f in ("cameras.txt", "cameras.bin")))
        if not dirs:
            hint = f" ({len(zips)} .zip archives there: unzip them in place)" if zips else ""
            raise DatasetError(f"no COLMAP models (<submap>/cameras.txt) under {base}{hint}")
        out: Dict[str, Tuple[Camera, Pose]] = {}
        for d in dirs:
            for name, entry in read_model_poses(d).items():
                out.setdefault(name, entry)  # an image in several submaps keeps its first pose
        return out

    def model_name(self, file_name: str) -> str:
        """The name the reference model uses for a database file (``.png``)."""
        self._reference()
        return self._model_names.get(file_name, file_name)

    # ---------------------------------------------------------------- queries
    def train_poses(self) -> Dict[str, Pose]:
        """{list name (condition/camera/ts.jpg): cam_from_world} from robotcar_v2_train.txt ({} if absent)."""
        if self._train is None:
            p = self.root / TRAIN_LIST
            self._train = read_train_list(p) if p.is_file() else {}
        return self._train

    def list_names(self, split: Optional[str] = None) -> List[str]:
        """Query names relative to images/ (condition/camera/timestamp.jpg) of a split."""
        split = split or self.split
        if split == "test":
            p = self.root / TEST_LIST
            if not p.is_file():
                raise DatasetError(f"RobotCar test list {p} does not exist (split='all' localizes every image "
                                   "under images/<condition>/)")
            return [self._with_condition(n, p) for n in read_name_list(p)]
        if split == "train":
            if not (self.root / TRAIN_LIST).is_file():
                raise DatasetError(f"RobotCar train list {self.root / TRAIN_LIST} does not exist")
            return list(self.train_poses())
        if split != "all":
            raise ValueError(f"unknown RobotCar query split {split!r}; choose from {SPLITS}")
        names = []
        for cond_dir in sorted(p for p in self.image_root.iterdir() if p.is_dir() and p.name != REFERENCE):
            for cam in self.cameras:
                names += [f"{cond_dir.name}/{cam}/{f.name}" for f in sorted((cond_dir / cam).glob("*.jpg"))]
        return names

    def _with_condition(self, name: str, list_path: Path) -> str:
        """``camera/ts.jpg`` (or ``ts.jpg``, taken as rear) -> ``condition/camera/ts.jpg`` by finding the file under
        images/<condition>/; full names pass through."""
        parts = name.split("/")
        if len(parts) >= 3:
            return "/".join(parts[-3:])
        if self._where is None:
            self._where = {}
            for d in sorted(p for p in self.image_root.iterdir() if p.is_dir() and p.name != REFERENCE):
                for cam in CAMERAS:
                    if (d / cam).is_dir():
                        for f in (d / cam).iterdir():
                            self._where.setdefault((cam, f.name), d.name)
        cam, fname = (parts[0], parts[1]) if len(parts) == 2 else ("rear", parts[0])
        cond = self._where.get((cam, fname))
        if cond is None:
            raise DatasetError(f"{list_path}: {name!r} is not under any {self.image_root}/<condition>/{cam}/ "
                               "(are all image archives extracted?)")
        return f"{cond}/{cam}/{fname}"

    @property
    def conditions(self) -> List[str]:
        return sorted({n.split("/")[0] for n in self.list_names()})

    def queries(self, condition: Optional[str] = None, split: Optional[str] = None) -> List[QueryItem]:
        gt = self.train_poses()
        out = []
        for name in self.list_names(split):
            parts = name.split("/")
            if len(parts) != 3:
                raise DatasetError(f"RobotCar query {name!r}: expected <condition>/<camera>/<timestamp>.jpg")
            cond, cam, fname = parts
            if condition is not None and cond != condition:
                continue
            try:
                stamp = int(Path(fname).stem) / 1e6
            except ValueError:
                stamp = None
            out.append(QueryItem(result_name(name), self.image_file(name), self.camera_intrinsics(cam), cond,
                                 gt.get(name), stamp))
        if condition is not None and not out:
            raise DatasetError(f"no RobotCar queries of condition {condition!r} in split {split or self.split!r} "
                               f"of {self.root}")
        return out

    def query_list(self, condition: Optional[str] = None) -> Dict[str, Camera]:
        """Query list entries (names relative to images/) as hloc generates them from the intrinsics."""
        return {str(q.path.relative_to(self.image_root)): q.camera for q in self.queries(condition)}
