"""The localizer: image + camera -> 6-DoF pose with covariance, the one pipeline the CLI, ROS and benchmarks share.

    extract features -> coarse stages (tracking prior | instance recognition | global retrieval) propose
    candidate reference clusters -> match query vs. each cluster's references -> lift to 2D-3D -> PnP
    (pycolmap LO-RANSAC + refinement) -> progressive acceptance -> optional covisibility refinement.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

from ..config import ConfigError, load_yaml, merge_with_models
from ..types import (STATUS_LOST, STATUS_OK, STATUS_RELOCALIZING, Camera, Features, LocalizationResult, Pose,
                     pose_error, rotation_angle_deg)
from .confidence import pose_quality
from .pnp import DEFAULT_PNP_CONF, PnPResult, estimate_pose, reprojection_errors
from .stages import COARSE_STAGES, Candidate, QueryContext

logger = logging.getLogger(__name__)


class Verified(NamedTuple):
    """A candidate verified by PnP."""

    pnp: PnPResult
    num_matches: int  # 2D-3D matches PnP ran on
    references: List[str]  # the candidate's references in the map, most inliers first
    candidate: Candidate
    contributions: np.ndarray  # PnP inliers per reference, in ``references`` order

    @property
    def best_reference_inliers(self) -> int:
        return int(self.contributions[0]) if len(self.contributions) else 0


def load_config(conf: Union[str, Path, Mapping[str, Any], None]) -> dict:
    """A localizer conf from a dict or a YAML file (top-level ``localizer:`` section or the conf itself)."""
    if conf is None:
        return {}
    if isinstance(conf, (str, Path)):
        data = load_yaml(conf)
        return dict(data.get("localizer", data))
    return dict(conf)


class Localizer:
    default_conf: Dict[str, Any] = {
        "map": None,  # map directory (required)
        "map_cache_mb": 256.0,  # memory for database images' features read on demand (LRU; ~0.6 MB per image)
        "features": None,  # None: the map's own feature conf (the only one that matches it)
        "matcher": None,  # None: the matcher the map was built with (map.json), e.g. nn for an XFeat map
        "coarse": [{"name": "tracking"}, {"name": "retrieval"}],
        # LBR: a recognition model ({model: path, k_can, rec_th, ...}: the "instance" stage's conf) makes the
        # instance-guided search the default coarse stage, with label-aware matching and labelled keypoints first
        "recognition": None,
        "pnp": DEFAULT_PNP_CONF,
        "acceptance": {
            "min_inliers": 20,  # below this no pose is reported (LOST)
            # below this confidence (imp_core.localization.confidence) the pose is not trusted: not OK
            "min_confidence": 0.5,
            "max_candidates": 8,  # clusters tried per frame at most
            "min_best_reference_inliers": 0,  # LBR: the best single reference must contribute this many (10)
        },
        "refinement": {
            "covisibility": False,  # LBR's covisibility-based refinement after acceptance
            "num_frames": 10,
            "radius_px": 20.0,
            "max_angle_deg": 10.0,
        },
        "tracking": {
            "max_lost_frames": 3,  # frames without a fix before the prior is dropped
            # a pose found from prior-selected references must stay near the prior, else global search decides
            "max_jump_m": 3.0,
            "max_jump_deg": 25.0,
            "max_gap_s": 2.0,  # a larger stamp gap (or a stamp going backwards) drops the prior
        },
        "label_keypoints": True,  # give query keypoints the recognized instance label under them
        # LBR: extract `oversample` x the keypoint budget, then keep instance-labelled keypoints first
        "labelled_first": {"enabled": False, "oversample": 2.0},
        "device": "auto",
    }

    def __init__(self, conf: Union[str, Path, Mapping[str, Any]], progress: bool = False):
        from ..features.base import create_extractor
        from ..mapping.format import LocalizationMap, read_map_meta
        from ..matching.base import MATCHERS, create_matcher, matchers_supporting

        conf = load_config(conf)
        if "recognition" not in conf and "coarse" not in conf and conf.get("map"):
            # the map's own recognizer (`imp map build --recognition`), unless the conf picks the coarse stages
            from ..recognition.map_recognizer import map_recognizer_conf

            rec = map_recognizer_conf(conf["map"])
            if rec:
                conf["recognition"] = rec
        if conf.get("recognition"):
            conf = self._recognition_defaults(conf)
        self.conf = merge_with_models(self.default_conf, conf, where="localizer")
        if not self.conf["map"]:
            raise ConfigError("localizer conf needs 'map': the directory of a map built with `imp map build`")
        meta = read_map_meta(self.conf["map"])
        fconf = dict(meta["features"]) if self.conf["features"] is None else dict(self.conf["features"])
        if fconf.get("name") != meta["features"].get("name"):
            from ..mapping.format import MapError

            raise MapError(f"map {self.conf['map']} holds {meta['features'].get('name')!r} features but the "
                           f"localizer is configured with {fconf.get('name')!r}")
        fconf["device"] = self.conf["device"] if fconf.get("device") in (None, "auto") else fconf["device"]
        self._budget = fconf.get("max_keypoints")
        if self.conf["labelled_first"]["enabled"] and self._budget:
            fconf["max_keypoints"] = int(self._budget * float(self.conf["labelled_first"]["oversample"]))
        mconf = self._matcher_conf(meta)
        mcls = MATCHERS.get(mconf["name"])
        supported = mcls.supported_features  # a matcher/feature mismatch is a configure error, not per frame
        if supported is not None and fconf.get("name") not in supported:
            raise ConfigError(f"matcher {mconf['name']!r} works with features {list(supported)}, but map "
                              f"{self.conf['map']} holds {fconf.get('name')!r} features; use the map's own "
                              f"matcher ({(meta.get('matcher') or {}).get('name', 'nn')!r}) or one of: "
                              f"{', '.join(matchers_supporting(fconf.get('name')))}")
        if "features" in mcls.default_conf:
            mconf.setdefault("features", fconf.get("name"))  # e.g. the IMP family picks its weights by features
        self.extractor = create_extractor(fconf)
        self.matcher = create_matcher(mconf)
        self.map = LocalizationMap.load(self.conf["map"], progress=progress, cache_mb=self.conf["map_cache_mb"])
        self.stages = [COARSE_STAGES.create(c, lmap=self.map) for c in self.conf["coarse"]]
        if not self.stages:
            raise ConfigError("localizer conf 'coarse' must list at least one stage (e.g. retrieval)")
        self._prior: Optional[Pose] = None
        self._prior_cov: Optional[np.ndarray] = None
        self._lost = 0
        self._tracking = False

    def _matcher_conf(self, meta: Mapping[str, Any]) -> Dict[str, Any]:
        """The configured matcher, or the one the map was built with (its recorded conf, minus the device)."""
        if self.conf["matcher"]:
            mconf = dict(self.conf["matcher"])
        elif meta.get("matcher"):
            mconf = {k: v for k, v in dict(meta["matcher"]).items() if k != "device"}
        else:  # maps from before the matcher was recorded
            fname = meta["features"].get("name")
            mconf = {"name": "lightglue" if fname in ("aliked", "disk") else "nn"}
        if not mconf.get("name"):
            raise ConfigError("localizer conf 'matcher' needs a 'name'")
        mconf.setdefault("device", self.conf["device"])
        self.conf["matcher"] = mconf
        return mconf

    @staticmethod
    def _recognition_defaults(conf: Dict[str, Any]) -> Dict[str, Any]:
        """With a recognition model and no explicit choices: tracking, then instance-guided search falling back to
        global retrieval; label-aware mutual NN; instance-labelled keypoints first (LBR)."""
        conf = dict(conf)
        rec = dict(conf["recognition"])
        rec.setdefault("fallback", {"name": "retrieval", "top_k": 5})
        conf.setdefault("coarse", [{"name": "tracking"}, {"name": "instance", **rec}])
        conf.setdefault("matcher", {"name": "label_nn"})
        conf.setdefault("labelled_first", {"enabled": True, "oversample": 2.0})
        conf.setdefault("refinement", {"covisibility": True})
        conf.setdefault("acceptance", {"min_inliers": 20, "max_candidates": 8, "min_best_reference_inliers": 10})
        return conf

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the tracking state: the next frame is localized globally."""
        self._last_stamp = None
        self._prior = None
        self._prior_cov = None
        self._lost = 0
        self._tracking = False

    def set_prior(self, pose: Pose, covariance: Optional[np.ndarray] = None) -> None:
        """A pose prior (cam_from_world), e.g. from /initialpose: the next frame tries references near it."""
        self._prior = pose
        self._prior_cov = covariance
        self._lost = 0

    @property
    def prior(self) -> Optional[Pose]:
        return self._prior

    def close(self) -> None:
        for s in self.stages:
            s.close()
        self.stages = []
        self.extractor = None
        self.matcher = None
        self.map = None

    # ------------------------------------------------------------------ main entry
    def localize(self, image: np.ndarray, camera: Optional[Camera] = None, prior: Optional[Pose] = None,
                 name: str = "", stamp: Optional[float] = None,
                 estimate_focal: Optional[bool] = None) -> LocalizationResult:
        """Localize one frame. ``prior`` (cam_from_world) overrides the tracking prior for this frame; ``stamp``
        (seconds) lets the tracker notice time gaps (sequence changes, dropped streams) and relocalize globally.

        ``camera=None``: the intrinsics are unknown; the focal length is estimated (starting from COLMAP's guess,
        1.2 x the longer side, principal point at the centre) and kept only where it beats the guess
        (``estimate_focal``, default True exactly when no camera is given). ``result.camera`` is the camera used.
        """
        if self.map is None:
            raise RuntimeError("localizer is closed")
        t0 = time.perf_counter()
        if stamp is not None:
            last = getattr(self, "_last_stamp", None)
            if last is not None and (stamp < last or stamp - last > self.conf["tracking"]["max_gap_s"]):
                self._prior = None
                self._tracking = False
            self._last_stamp = stamp
        timings: Dict[str, float] = {}
        image = np.asarray(image)
        if image.ndim < 2:
            raise ValueError(f"image {name or ''} must be HxW or HxWx3, got shape {image.shape}")
        camera, pnp_conf = self._frame_camera(image.shape[1], image.shape[0], camera, estimate_focal)
        if image.shape[0] != camera.height or image.shape[1] != camera.width:
            raise ValueError(f"image {name or ''} is {image.shape[1::-1][:2]} but its camera is "
                             f"{camera.width}x{camera.height}")
        feats = self.extractor.extract(image)
        timings["extraction"] = 1000 * (time.perf_counter() - t0)
        ctx = QueryContext(image=image, camera=camera, features=feats,
                           prior=prior if prior is not None else self._prior)
        ctx.extras["pnp_conf"] = pnp_conf
        acc = self.conf["acceptance"]
        best: Optional[Verified] = None
        best_quality: Dict[str, float] = {}
        best_trusted = accepted = False
        timings["matching"] = 0.0
        timings["pnp"] = 0.0
        why = _Why()
        for stage in self.stages:
            ts = time.perf_counter()
            stage.prepare(ctx)
            cands = stage.propose(ctx)
            key = stage.conf["name"]
            timings[key] = timings.get(key, 0.0) + 1000 * (time.perf_counter() - ts)
            why.candidates += len(cands)
            if ctx.label_map is not None and self.conf["label_keypoints"] and feats.labels is None:
                from ..recognition.instances import keypoint_labels

                feats.labels = keypoint_labels(feats.keypoints, ctx.label_map)
            feats = ctx.features = self._apply_budget(feats)
            for cand in cands[: int(acc["max_candidates"])]:
                ver = self._verify(ctx, cand, timings, why)
                if ver is None:
                    continue
                if (cand.source == "tracking" and ctx.prior is not None
                        and not self._near_prior(ver.pnp.pose, ctx.prior)):
                    why.jumps += 1
                    continue  # a jump away from the prior: wrong references, let global search decide
                quality = pose_quality(ver.pnp, ver.num_matches, ver.contributions)
                trusted = quality["confidence"] >= acc["min_confidence"]
                if best is None or (trusted, ver.pnp.num_inliers) > (best_trusted, best.pnp.num_inliers):
                    best, best_quality, best_trusted = ver, quality, trusted
                if (trusted and ver.pnp.num_inliers >= cand.min_inliers
                        and ver.best_reference_inliers >= acc["min_best_reference_inliers"]):
                    accepted = True
                    best, best_quality, best_trusted = ver, quality, trusted
                    break
            if accepted:
                break
        for k, v in ctx.timings.items():  # stage-internal sub-timings (e.g. recognition network)
            timings.setdefault(k, v)
        result = LocalizationResult(instances=list(ctx.instances), timings=timings)
        if best is not None and best_trusted and best.pnp.num_inliers >= acc["min_inliers"]:
            pnp, n_matches, refs, cand = best.pnp, best.num_matches, best.references, best.candidate
            if self.conf["refinement"]["covisibility"]:
                tr = time.perf_counter()
                refined = self._refine_covisible(ctx, pnp, refs)
                timings["refinement"] = 1000 * (time.perf_counter() - tr)
                if refined is not None:
                    pnp, n_matches, refs = refined
            result.status = STATUS_OK
            result.pose = pnp.pose
            result.covariance = pnp.covariance
            result.num_matches = n_matches
            result.num_inliers = pnp.num_inliers
            result.references = refs
            result.inlier_keypoints = pnp.inlier_points2D
            result.inlier_points3D = pnp.inlier_points3D
            result.mode = "tracking" if cand.source == "tracking" else (
                "instance" if cand.source.startswith("instance") else "global")
            self._prior = pnp.pose
            self._prior_cov = pnp.covariance
            self._lost = 0
            self._tracking = True
        else:
            self._lost += 1
            if best is not None:
                result.num_matches = best.num_matches
                result.num_inliers = best.pnp.num_inliers
                result.references = best.references
            result.status = STATUS_RELOCALIZING if self._tracking else STATUS_LOST
            result.message = why.reason(len(feats), best, best_quality, acc)
            if self._lost > self.conf["tracking"]["max_lost_frames"]:
                self._prior = None
                self._tracking = False
                result.status = STATUS_LOST
        if best is not None:
            result.confidence = float(best_quality["confidence"])
            result.quality = {k: v for k, v in best_quality.items() if k != "confidence"}
            result.camera = best.pnp.camera
            result.focal_estimated = bool(best.pnp.focal_estimated)
        else:
            result.camera = camera
        timings["total"] = 1000 * (time.perf_counter() - t0)
        return result

    # ------------------------------------------------------------------ steps
    def _frame_camera(self, width: int, height: int, camera: Optional[Camera],
                      estimate_focal: Optional[bool]) -> Tuple[Camera, Dict[str, Any]]:
        """(camera, PnP conf) for a frame: without a camera, COLMAP's guess with its focal length estimated
        ('auto': kept where it beats the guess); ``estimate_focal`` overrides that choice."""
        if camera is None:
            camera = guess_camera(width, height)
            estimate_focal = True if estimate_focal is None else estimate_focal
        pnp_conf = self.conf["pnp"]
        if estimate_focal and pnp_conf.get("refine_focal_length") is not True:
            pnp_conf = {**pnp_conf, "refine_focal_length": "auto"}
        return camera, pnp_conf

    def _near_prior(self, pose: Pose, prior: Pose) -> bool:
        tc = self.conf["tracking"]
        dt, dr = pose_error(pose, prior)
        return dt <= tc["max_jump_m"] and dr <= tc["max_jump_deg"]

    def _apply_budget(self, feats: Features) -> Features:
        """With ``labelled_first``: keep labelled keypoints first (by score), then the rest, up to the budget."""
        if not self.conf["labelled_first"]["enabled"] or not self._budget or len(feats) <= self._budget:
            return feats
        labelled = (feats.labels > 0) if feats.labels is not None else np.zeros(len(feats), bool)
        order = np.lexsort((-feats.scores, ~labelled))  # labelled first, then by descending score
        return feats.subset(np.sort(order[: self._budget]))

    def _correspondences(self, ctx: QueryContext, refs: List[str], timings: Dict[str, float]):
        """Match the query with each reference, lift to (query keypoint, 3D point id) pairs."""
        tm = time.perf_counter()
        ref_feats = [self.map.features(r) for r in refs]
        contexts = [{"points3D": self.map.keypoint_xyz(r), "camera0": ctx.camera} for r in refs]
        all_matches = self.matcher.match_many(ctx.features, ref_feats, contexts)
        timings["matching"] += 1000 * (time.perf_counter() - tm)
        q_idx, p_ids, src = [], [], []
        for k, (r, m) in enumerate(zip(refs, all_matches)):
            if len(m) == 0:
                continue
            ids = self.map.point3D_ids(r)[m.indices[:, 1]]
            ok = ids >= 0
            q_idx.append(m.indices[ok, 0])
            p_ids.append(ids[ok])
            src.append(np.full(int(ok.sum()), k))
        if not q_idx:
            return None
        q_idx = np.concatenate(q_idx)
        p_ids = np.concatenate(p_ids)
        src = np.concatenate(src)
        pairs = np.unique(np.stack([q_idx, p_ids], 1), axis=0, return_index=True)[1]
        return q_idx[pairs], p_ids[pairs], src[pairs]

    def _verify(self, ctx: QueryContext, cand: Candidate, timings: Dict[str, float],
                why: Optional["_Why"] = None) -> Optional[Verified]:
        why = why if why is not None else _Why()
        refs = [r for r in dict.fromkeys(cand.references) if self.map.has(r)]
        if not refs:
            return None
        why.verified += 1
        corr = self._correspondences(ctx, refs, timings)
        if corr is None:
            return None
        q_idx, p_ids, src = corr
        why.max_matches = max(why.max_matches, len(q_idx))
        tp = time.perf_counter()
        pnp = estimate_pose(ctx.features.keypoints[q_idx], self.map.points3D_xyz(p_ids), ctx.camera,
                            ctx.extras.get("pnp_conf", self.conf["pnp"]))
        timings["pnp"] += 1000 * (time.perf_counter() - tp)
        if pnp is None:
            why.ransac_failed += 1
            return None
        # order references by their inlier contribution (the best one drives covisibility refinement)
        contrib = np.bincount(src[pnp.inliers], minlength=len(refs))
        order = np.argsort(-contrib, kind="stable")
        return Verified(pnp, len(q_idx), [refs[i] for i in order], cand, contrib[order])

    def _refine_covisible(self, ctx: QueryContext, pnp: PnPResult, refs: List[str]):
        """LBR-style: re-match against frames covisible with the best reference whose orientation is close to the
        estimate, keep 2D-3D matches that reproject within ``radius_px``, and re-run PnP."""
        rc = self.conf["refinement"]
        frames = [refs[0]] + self.map.covisible(refs[0], 4 * int(rc["num_frames"]))
        keep = []
        for n in frames:
            if rotation_angle_deg(self.map.pose(n).R, pnp.pose.R) <= rc["max_angle_deg"]:
                keep.append(n)
            if len(keep) >= rc["num_frames"]:
                break
        if not keep:
            return None
        corr = self._correspondences(ctx, keep, {"matching": 0.0})
        if corr is None:
            return None
        q_idx, p_ids, _ = corr
        xyz = self.map.points3D_xyz(p_ids)
        camera = pnp.camera  # with its focal length estimated when it was unknown
        err = reprojection_errors(pnp.pose, camera, ctx.features.keypoints[q_idx], xyz)
        near = err <= rc["radius_px"]
        if near.sum() < self.conf["acceptance"]["min_inliers"]:
            return None
        new = estimate_pose(ctx.features.keypoints[q_idx[near]], xyz[near], camera, self.conf["pnp"])
        if new is None or new.num_inliers < pnp.num_inliers:
            return None
        return new, int(near.sum()), keep


def guess_camera(width: int, height: int) -> Camera:
    """COLMAP's camera for an image without intrinsics: focal 1.2 x the longer side, centred principal point."""
    return Camera("SIMPLE_PINHOLE", width, height, [1.2 * max(width, height), width / 2.0, height / 2.0])


class _Why:
    """Counts what happened to a frame's candidates, to say why it was not localized."""

    def __init__(self) -> None:
        self.candidates = 0  # proposed by the coarse stages
        self.verified = 0  # with references in the map
        self.max_matches = 0  # most 2D-3D matches of one candidate
        self.ransac_failed = 0
        self.jumps = 0  # tracking poses rejected as jumps away from the prior

    def reason(self, num_keypoints: int, best: Optional[Verified], quality: Mapping[str, float],
               acc: Mapping[str, Any]) -> str:
        if num_keypoints == 0:
            return "no keypoints detected in the image"
        if self.candidates == 0 or self.verified == 0:
            return "no retrieval candidate: no reference image proposed"
        if best is None:
            if self.max_matches < 4:
                return f"too few matches: at most {self.max_matches} 2D-3D matches with the {self.verified} " \
                       "candidate(s)"
            if self.jumps and not self.ransac_failed:
                return "pose rejected: it jumped away from the tracking prior"
            return f"RANSAC failed: no pose from up to {self.max_matches} 2D-3D matches"
        pnp = best.pnp
        if pnp.num_inliers < acc["min_inliers"]:
            return (f"too few inliers: {pnp.num_inliers} < {acc['min_inliers']} "
                    f"(of {best.num_matches} 2D-3D matches)")
        return (f"pose rejected by confidence: {quality['confidence']:.2f} < {acc['min_confidence']} "
                f"({pnp.num_inliers} inliers, inlier ratio {quality['inlier_ratio']:.2f}, "
                f"coverage {quality['coverage']:.2f})")
