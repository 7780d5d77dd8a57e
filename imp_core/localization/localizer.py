"""The localizer: image + camera -> 6-DoF pose with covariance, the one pipeline the CLI, ROS and benchmarks share.

    extract features -> coarse stages (tracking prior | instance recognition | global retrieval) propose
    candidate reference clusters -> match query vs. each cluster's references -> lift to 2D-3D -> PnP
    (pycolmap LO-RANSAC + refinement) -> progressive acceptance -> optional covisibility refinement.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Collection, Dict, List, Mapping, NamedTuple, Optional, Tuple, Type, cast

import numpy as np

from ..config import ConfigError, ConfLike, Overrides, merge, parse_overrides, read_conf
from ..features.base import FeatureExtractor, create_extractor
from ..mapping.format import LocalizationMap, MapError, read_map_meta
from ..matching.base import MATCHERS, Matcher, create_matcher, matchers_supporting
from ..recognition.map_recognizer import map_recognizer_conf
from ..stages import COARSE_STAGES, Candidate, CoarseStage, QueryContext
from ..threads import set_threads
from ..types import STATUS_OK, Camera, Features, LocalizationResult, Pose, rotation_angle_deg
from .confidence import confidence_model, pose_quality
from .pnp import DEFAULT_PNP_CONF, PnPResult, estimate_pose, estimates_focal, reprojection_errors
from .tracking import Tracker, TrackingStage
from .visualize import compact_labels

logger = logging.getLogger(__name__)


class Verified(NamedTuple):
    """A candidate verified by PnP."""

    pnp: PnPResult
    num_matches: int  # 2D-3D matches PnP ran on
    references: List[str]  # the candidate's references in the map, most inliers first
    candidate: Candidate
    contributions: np.ndarray  # PnP inliers per reference, in ``references`` order
    matches_per_reference: Optional[np.ndarray] = None  # 2D-3D matches per reference, in ``references`` order

    @property
    def best_reference_inliers(self) -> int:
        return int(self.contributions[0]) if len(self.contributions) else 0


class Scored(NamedTuple):
    """A verified candidate with its confidence (``pose_quality``) and whether that is trusted."""

    verified: Verified
    quality: Dict[str, float]
    trusted: bool  # confidence >= acceptance.min_confidence

    @property
    def rank(self) -> Tuple[bool, int]:
        """Which of two poses is the better one to report: trusted first, then more inliers."""
        return self.trusted, self.verified.pnp.num_inliers


#: Named localizer confs (hloc ``confs`` style): a layer between ``Localizer.default_conf`` and the user's conf.
CONFS: Dict[str, Dict[str, Any]] = {
    # tracking prior, then global retrieval: the defaults as they are
    "retrieval": {},
    # LBR: tracking, then instance-guided search (the recognition conf goes into the "instance" stage) falling back
    # to global retrieval; label-aware mutual NN; instance-labelled keypoints first; covisibility refinement; the
    # best single reference must contribute 10 inliers
    "lbr": {
        "coarse": [{"name": "tracking"}, {"name": "instance", "fallback": {"name": "retrieval"}}],
        "matcher": {"name": "label_nn"},
        "labelled_first": {"enabled": True},
        "refinement": {"covisibility": True},
        "acceptance": {"min_best_reference_inliers": 10},
    },
}


class Localizer:
    default_conf: Dict[str, Any] = {
        "map": None,  # map directory (required)
        "map_cache_mb": 256.0,  # memory for database images' features read on demand (LRU; ~0.6 MB per image)
        "warmup": True,  # at start-up, run each per-frame step once so that the first frame is as fast as the rest
        "features": None,  # the map's own feature conf (the only one that matches it), updated by what is given here
        # None: the matcher the map was built with (map.json), e.g. nn for an XFeat map; a conf may add `fallback`
        # (a matcher name, or "map" for the map's own) for where the named one cannot run, e.g. EIMP on features
        # imp ships no weights for: {name: eimp, fallback: map}
        "matcher": None,
        "coarse": [{"name": "tracking"}, {"name": "retrieval"}],
        # LBR: a recognition model ({model: path, k_can, rec_th, ...}: the "instance" stage's conf) makes the
        # instance-guided search the default coarse stage, with label-aware matching and labelled keypoints first
        "recognition": None,
        "pnp": DEFAULT_PNP_CONF,
        "acceptance": {
            "min_inliers": 20,  # below this no pose is reported (LOST)
            # below this confidence (imp_core.localization.confidence) the pose is not trusted: not OK. 0.6 with the
            # second look below (0.5 without it): on validation world 16 the second look brought two wrong poses from
            # far references back at 0.55 / 0.56 (docs/CONFIDENCE.md)
            "min_confidence": 0.6,
            # the logistic model behind the confidence: a name in confidence.CONF_MODELS, or a JSON file of one
            # fitted on one's own data (`benchmarks/bench_confidence.py --fit --save`)
            "confidence_model": "default",
            "max_candidates": 8,  # clusters tried per frame at most
            "min_best_reference_inliers": 0,  # LBR: the best single reference must contribute this many (10)
        },
        "refinement": {
            "covisibility": False,  # LBR's covisibility-based refinement after acceptance
            "num_frames": 10,
            "radius_px": 20.0,
            "max_angle_deg": 10.0,
        },
        # enabled: a pose the search does not report (untrusted, or too few inliers) gets a second look: the
        # references near it, chosen as the tracking stage chooses them near a prior, are verified as one more
        # cluster and the better of the two poses is kept. Retrieval at night often ranks one reference that sees
        # the place among four that do not; a right pose from it has few inliers and is not trusted, and the
        # references around it give it the inliers it lacked (SIFT night queries of validation world 15 reported
        # right: 15 -> 25 of 40 with the focal length known, 13 -> 21 unknown). A wrong pose from references at a
        # look-alike place can come back with a little more support too, which is why the confidence threshold is
        # 0.6 with it (docs/CONFIDENCE.md; benchmarks/bench_confidence.py --no-second-look for the search without it)
        "second_look": {"enabled": True, "num_references": 4, "covisible": 2, "max_distance": 20.0,
                        "max_angle_deg": 50.0},
        "tracking": {
            "max_lost_frames": 3,  # frames without a fix before the prior is dropped
            # a pose found from prior-selected references must stay near the prior, else global search decides
            "max_jump_m": 3.0,
            "max_jump_deg": 25.0,
            # ... plus this many metres per second since the prior's frame (stamps needed): a stream processed
            # slower than it comes skips frames while the camera moves on (0: a fixed max_jump_m)
            "max_speed_mps": 0.0,
            "max_gap_s": 2.0,  # a larger stamp gap (or a stamp going backwards) drops the prior
        },
        "label_keypoints": True,  # the instance stage gives query keypoints the recognized label under them
        # LBR: extract `oversample` x the keypoint budget, then keep instance-labelled keypoints first
        "labelled_first": {"enabled": False, "oversample": 2.0},
        # torch / OpenCV CPU threads of the process (imp_core.threads); 0: auto, half the cores (1 on 2 cores): set
        # here instead of inheriting one thread per core, which oversubscribes the CPU next to other busy processes
        "threads": 0,
        "device": "auto",
    }

    def __init__(self, conf: ConfLike, progress: bool = False, overrides: Overrides = None):
        """``conf``: a YAML file (its ``localizer:`` section) or a dict, completed by ``localizer_conf`` (defaults,
        preset, dotted ``overrides``); the map, models and coarse stages are loaded here, not at the first frame."""

        self.conf = localizer_conf(conf, overrides)
        if not self.conf["map"]:
            raise ConfigError("localizer conf needs 'map': the directory of a map built with `imp map build`")
        meta = read_map_meta(self.conf["map"])
        # the map's feature conf, updated by the configured one by the config rule (features: {max_keypoints: 1024}
        # keeps the map's other settings; another name replaces it and is refused just below)
        fconf = merge(None, meta["features"], self.conf["features"], where="localizer.features")
        if fconf.get("name") != meta["features"].get("name"):
            raise MapError(f"map {self.conf['map']} holds {meta['features'].get('name')!r} features but the "
                           f"localizer is configured with {fconf.get('name')!r}")
        fconf["device"] = self.conf["device"] if fconf.get("device") in (None, "auto") else fconf["device"]
        self._budget = fconf.get("max_keypoints")
        if self.conf["labelled_first"]["enabled"] and self._budget:
            fconf["max_keypoints"] = int(self._budget * float(self.conf["labelled_first"]["oversample"]))
        mconf = self._matcher_conf(meta)
        mcls = cast(Type[Matcher], MATCHERS.get(mconf["name"]))  # the registry holds Matcher classes
        supported = mcls.supported_features  # a matcher/feature mismatch is a configure error, not per frame
        if supported is not None and fconf.get("name") not in supported:
            raise ConfigError(f"matcher {mconf['name']!r} works with features {list(supported)}, but map "
                              f"{self.conf['map']} holds {fconf.get('name')!r} features; use the map's own "
                              f"matcher ({(meta.get('matcher') or {}).get('name', 'nn')!r}) or one of: "
                              f"{', '.join(matchers_supporting(fconf.get('name')))}")
        if "features" in mcls.default_conf:
            mconf.setdefault("features", fconf.get("name"))  # e.g. the IMP family picks its weights by features

        self.confidence_model = confidence_model(self.conf["acceptance"]["confidence_model"])
        self.threads = set_threads(self.conf["threads"])
        # None once closed (``close``); the private properties below narrow them for the steps of a frame
        self.extractor: Optional[FeatureExtractor] = create_extractor(fconf)
        self.matcher: Optional[Matcher] = create_matcher(mconf)
        self.map: Optional[LocalizationMap] = LocalizationMap.load(self.conf["map"], progress=progress,
                                                                   cache_mb=self.conf["map_cache_mb"])
        self.stages = [COARSE_STAGES.create(c, lmap=self._map) for c in self.conf["coarse"]]
        if not self.stages:
            raise ConfigError("localizer conf 'coarse' must list at least one stage (e.g. retrieval)")
        # the timings the localizer measures itself; a stage's own sub-timing with one of these names is reported
        # as "<stage>.<name>" (e.g. "instance.retrieval" for its fallback when a retrieval stage runs too)
        self._timing_keys = {"extraction", "matching", "pnp", "refinement", "second_look", "total"} | {
            s.conf["name"] for s in self.stages}
        self.tracker = Tracker(self.conf["tracking"])
        look = dict(self.conf["second_look"])
        enabled = look.pop("enabled")
        self._second: Optional[TrackingStage] = (
            TrackingStage({"name": "tracking", **look}, lmap=self._map) if enabled else None)
        if self.conf["warmup"]:
            self.warmup()

    @property
    def _map(self) -> LocalizationMap:
        if self.map is None:
            raise RuntimeError("localizer is closed")
        return self.map

    @property
    def _extractor(self) -> FeatureExtractor:
        if self.extractor is None:
            raise RuntimeError("localizer is closed")
        return self.extractor

    @property
    def _matcher(self) -> Matcher:
        if self.matcher is None:
            raise RuntimeError("localizer is closed")
        return self.matcher

    def describe_matcher(self) -> str:
        """The matcher in use, e.g. "eimp (weights .../imp_xfeat.pth)" (see ``matcher_note`` for a fallback)."""
        return self._matcher.describe()

    def warmup(self) -> float:
        """Run a frame's steps once on throw-away data: extraction of a noise image at the map's image size, each
        coarse stage on it, matching against the references the first proposing stage picks (else six database
        images) and PnP on one reference's own 2D-3D pairs. The first real frame then does not pay for lazy imports,
        first forward passes, first-touch allocations and the first RANSAC. No prior is given (the tracking stage
        proposes nothing) and no tracking state changes; returns the seconds it took."""
        t0 = time.perf_counter()
        names = self._map.names
        if not names:
            return 0.0
        cam = self._map.camera(names[len(names) // 2])
        noise = np.random.default_rng(0).integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8)
        feats = self._extractor.extract(noise)
        ctx = QueryContext(image=noise, camera=cam, features=feats)
        refs: List[str] = []
        for stage in self.stages:
            stage.prepare(ctx)
            cands = stage.propose(ctx)
            if cands and not refs:
                refs = [r for r in dict.fromkeys(cands[0].references) if self._map.has(r)]
        refs = refs or list(names[:: max(1, len(names) // 6)][:6])
        if len(feats):
            self._matcher.match_many(feats, [self._map.features(r) for r in refs],
                                    [{"points3D": self._map.keypoint_xyz(r), "camera0": cam} for r in refs])
        has = self._map.point3D_ids(refs[0]) >= 0
        if has.sum() >= 6:
            estimate_pose(self._map.features(refs[0]).keypoints[has], self._map.keypoint_xyz(refs[0])[has], cam,
                          self.conf["pnp"])
        return time.perf_counter() - t0

    def _matcher_conf(self, meta: Mapping[str, Any]) -> Dict[str, Any]:
        mconf, self.matcher_note = choose_matcher(self.conf["matcher"], meta, self.conf["device"])
        if self.matcher_note:
            logger.warning(self.matcher_note)
        self.conf["matcher"] = mconf
        return mconf

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the tracking state: the next frame is localized globally."""
        self.tracker.reset()

    def set_prior(self, pose: Pose, covariance: Optional[np.ndarray] = None) -> None:
        """A pose prior (cam_from_world), e.g. from /initialpose: the next frame tries references near it."""
        self.tracker.set_prior(pose, covariance)

    @property
    def prior(self) -> Optional[Pose]:
        return self.tracker.prior

    def close(self) -> None:
        for s in self.stages:
            s.close()
        self.stages = []
        self._second = None
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
        self.tracker.new_frame(stamp)
        ctx = self.query_context(image, camera, prior if prior is not None else self.tracker.prior, name,
                                 estimate_focal)
        timings: Dict[str, float] = {"extraction": 1000 * (time.perf_counter() - t0), "matching": 0.0, "pnp": 0.0}
        why = _Why()
        best = self._search(ctx, timings, why)
        result = self._result(ctx, best, why, timings)
        timings["total"] = 1000 * (time.perf_counter() - t0)
        return result

    def query_context(self, image: np.ndarray, camera: Optional[Camera] = None, prior: Optional[Pose] = None,
                      name: str = "", estimate_focal: Optional[bool] = None) -> QueryContext:
        """A frame's query context as ``localize`` starts its search from: the camera (COLMAP's guess when None)
        with its PnP conf, the features extracted, ``prior`` as given (``localize`` passes the tracking prior)."""
        image = np.asarray(image)
        if image.ndim < 2:
            raise ValueError(f"image {name or ''} must be HxW or HxWx3, got shape {image.shape}")
        camera, pnp_conf = self._frame_camera(image.shape[1], image.shape[0], camera, estimate_focal)
        if image.shape[0] != camera.height or image.shape[1] != camera.width:
            raise ValueError(f"image {name or ''} is {image.shape[1::-1][:2]} but its camera is "
                             f"{camera.width}x{camera.height}")
        ctx = QueryContext(image=image, camera=camera, features=self._extractor.extract(image), prior=prior,
                           label_keypoints=bool(self.conf["label_keypoints"]))
        ctx.extras["pnp_conf"] = pnp_conf
        ctx.extras["estimate_focal"] = estimates_focal(pnp_conf)  # the matcher's pose checks treat it alike
        return ctx

    def _search(self, ctx: QueryContext, timings: Dict[str, float], why: "_Why") -> Optional[Scored]:
        """LBR's progressive acceptance: each coarse stage in turn proposes candidate clusters, tried in order (at
        most ``max_candidates`` per stage); the first whose pose is trusted, reaches the cluster's ``min_inliers``
        and whose best reference contributes ``min_best_reference_inliers`` is taken at once. Otherwise the best
        pose seen (trusted first, then most inliers) is returned, None when no candidate gave a pose. A pose that
        would not be reported gets its second look (``second_look``)."""
        return self.conclude(ctx, self._progressive(ctx, timings, why), timings, why)

    def _progressive(self, ctx: QueryContext, timings: Dict[str, float], why: "_Why") -> Optional[Scored]:
        """The candidates of the coarse stages in turn, up to the first accepted pose (``_search``)."""
        acc = self.conf["acceptance"]
        best: Optional[Scored] = None
        for stage in self.stages:
            cands = self._propose(stage, ctx, timings)
            why.candidates += len(cands)
            ctx.features = self._apply_budget(_query_features(ctx))  # labelled keypoints first, once a stage labelled
            for cand in cands[: int(acc["max_candidates"])]:
                ver = self._verify(ctx, cand, timings, why)
                if ver is None:
                    continue
                if cand.source == "tracking" and ctx.prior is not None and not self.tracker.near(ver.pnp.pose,
                                                                                                 ctx.prior):
                    why.jumps += 1
                    continue  # a jump away from the prior: wrong references, let global search decide
                scored = self.score(ver)
                if self._accepts(scored):
                    return scored
                if best is None or scored.rank > best.rank:
                    best = scored
        return best

    def score(self, ver: Verified) -> Scored:
        """A verified candidate's quality measures and confidence, and whether that is trusted."""
        quality = pose_quality(ver.pnp, ver.num_matches, ver.contributions, ver.matches_per_reference,
                               self.confidence_model)
        return Scored(ver, quality, quality["confidence"] >= self.conf["acceptance"]["min_confidence"])

    def conclude(self, ctx: QueryContext, best: Optional[Scored], timings: Dict[str, float],
                 why: Optional["_Why"] = None, among: Optional[Collection[str]] = None) -> Optional[Scored]:
        """The pose a search ends with, given the best it found: that pose when it is reported (or None), else its
        second look (``second_look``; ``among`` restricts the references it may use)."""
        if best is None or self._reports(best):
            return best
        return self.second_look(ctx, best, timings, why, among)

    def second_look(self, ctx: QueryContext, first: Scored, timings: Dict[str, float],
                    why: Optional["_Why"] = None, among: Optional[Collection[str]] = None) -> Scored:
        """``second_look`` (see the conf): verify the references near ``first``'s pose (only those in ``among``
        when given) and return the better pose, by ``Scored.rank``. ``first`` itself when the option is off, when
        no reference is near, or when they are the references it came from. Its time goes under "second_look"
        (its matching and PnP also count under "matching" and "pnp", as every verification's do)."""
        if self._second is None:
            return first
        t0 = time.perf_counter()
        refs = [r for r in self._second.select(first.verified.pnp.pose) if among is None or r in among]
        better = first
        if refs and set(refs) != set(first.verified.references):
            ver = self._verify(ctx, Candidate(refs, 0, "second look"), timings, why)
            if ver is not None:
                scored = self.score(ver)
                better = scored if scored.rank > first.rank else first
        timings["second_look"] = timings.get("second_look", 0.0) + 1000 * (time.perf_counter() - t0)
        return better

    def _accepts(self, s: Scored) -> bool:
        """Whether a candidate's pose ends the search (its cluster's own inlier threshold)."""
        return (s.trusted and s.verified.pnp.num_inliers >= s.verified.candidate.min_inliers
                and s.verified.best_reference_inliers >= self.conf["acceptance"]["min_best_reference_inliers"])

    def _reports(self, s: Scored) -> bool:
        """Whether the search's pose is reported (OK): trusted and at least ``acceptance.min_inliers`` inliers."""
        return s.trusted and s.verified.pnp.num_inliers >= self.conf["acceptance"]["min_inliers"]

    def _result(self, ctx: QueryContext, best: Optional[Scored], why: "_Why",
                timings: Dict[str, float]) -> LocalizationResult:
        """The frame's result from the search's pose (refined with covisible frames when configured); the tracker
        learns whether the frame was localized."""

        result = LocalizationResult(instances=list(ctx.instances), label_map=compact_labels(ctx.label_map),
                                    timings=timings)
        if best is not None:
            ver = best.verified
            result.num_matches, result.num_inliers, result.references = (ver.num_matches, ver.pnp.num_inliers,
                                                                         ver.references)
            result.confidence = float(best.quality["confidence"])
            result.quality = {k: v for k, v in best.quality.items() if k != "confidence"}
            result.camera = ver.pnp.camera
            result.focal_estimated = bool(ver.pnp.focal_estimated)
        else:
            result.camera = ctx.camera
        if best is None or not self._reports(best):
            result.status = self.tracker.missed()
            result.message = why.reason(len(_query_features(ctx)), best, self.conf["acceptance"])
            return result
        pnp, n_matches, refs = best.verified.pnp, best.verified.num_matches, best.verified.references
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
        result.mode = _mode(best.verified.candidate.source)
        self.tracker.fixed(pnp.pose, pnp.covariance)
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

    def _propose(self, stage: CoarseStage, ctx: QueryContext, timings: Dict[str, float]) -> List[Candidate]:
        """One coarse stage's candidates. Its time goes under its name; the sub-timings it records itself
        (``ctx.timings``, e.g. the instance stage's "recognition") under theirs, or as "<stage>.<name>" where the
        localizer measures something of that name."""
        ctx.timings = {}
        ts = time.perf_counter()
        stage.prepare(ctx)
        cands = stage.propose(ctx)
        key = stage.conf["name"]
        timings[key] = timings.get(key, 0.0) + 1000 * (time.perf_counter() - ts)
        for k, v in ctx.timings.items():
            k = f"{key}.{k}" if k in self._timing_keys else k
            timings[k] = timings.get(k, 0.0) + v
        return cands

    def _apply_budget(self, feats: Features) -> Features:
        """With ``labelled_first``: keep labelled keypoints first (by score), then the rest, up to the budget. The
        labels come from the stage that recognized instances (``QueryContext.label_keypoints``)."""
        if not self.conf["labelled_first"]["enabled"] or not self._budget or len(feats) <= self._budget:
            return feats
        labelled = (feats.labels > 0) if feats.labels is not None else np.zeros(len(feats), bool)
        order = np.lexsort((-feats.scores, ~labelled))  # labelled first, then by descending score
        return feats.subset(np.sort(order[: self._budget]))

    def _correspondences(self, ctx: QueryContext, refs: List[str], timings: Dict[str, float]):
        """Match the query with each reference, lift to (query keypoint, 3D point id) pairs."""
        tm = time.perf_counter()
        ref_feats = [self._map.features(r) for r in refs]
        focal = bool(ctx.extras.get("estimate_focal", False))
        seed = int(self.conf["pnp"]["random_seed"])  # the matcher's PnP checks are seeded like the localizer's PnP
        contexts = [{"points3D": self._map.keypoint_xyz(r), "camera0": ctx.camera, "estimate_focal": focal,
                     "random_seed": seed} for r in refs]
        all_matches = self._matcher.match_many(_query_features(ctx), ref_feats, contexts)
        timings["matching"] += 1000 * (time.perf_counter() - tm)
        q_parts: List[np.ndarray] = []
        p_parts: List[np.ndarray] = []
        src_parts: List[np.ndarray] = []
        for k, (r, m) in enumerate(zip(refs, all_matches)):
            if len(m) == 0:
                continue
            ids = self._map.point3D_ids(r)[m.indices[:, 1]]
            ok = ids >= 0
            q_parts.append(m.indices[ok, 0])
            p_parts.append(ids[ok])
            src_parts.append(np.full(int(ok.sum()), k))
        if not q_parts:
            return None
        q_idx = np.concatenate(q_parts)
        p_ids = np.concatenate(p_parts)
        src = np.concatenate(src_parts)
        pairs = np.unique(np.stack([q_idx, p_ids], 1), axis=0, return_index=True)[1]
        return q_idx[pairs], p_ids[pairs], src[pairs]

    def _verify(self, ctx: QueryContext, cand: Candidate, timings: Dict[str, float],
                why: Optional["_Why"] = None) -> Optional[Verified]:
        why = why if why is not None else _Why()
        refs = [r for r in dict.fromkeys(cand.references) if self._map.has(r)]
        if not refs:
            return None
        why.verified += 1
        corr = self._correspondences(ctx, refs, timings)
        if corr is None:
            return None
        q_idx, p_ids, src = corr
        why.max_matches = max(why.max_matches, len(q_idx))
        tp = time.perf_counter()
        pnp = estimate_pose(_query_features(ctx).keypoints[q_idx], self._map.points3D_xyz(p_ids), ctx.camera,
                            ctx.extras.get("pnp_conf", self.conf["pnp"]))
        timings["pnp"] += 1000 * (time.perf_counter() - tp)
        if pnp is None:
            why.ransac_failed += 1
            return None
        # order references by their inlier contribution (the best one drives covisibility refinement)
        contrib = np.bincount(src[pnp.inliers], minlength=len(refs))
        order = np.argsort(-contrib, kind="stable")
        per_ref = np.bincount(src, minlength=len(refs))
        return Verified(pnp, len(q_idx), [refs[i] for i in order], cand, contrib[order], per_ref[order])

    def _refine_covisible(self, ctx: QueryContext, pnp: PnPResult, refs: List[str]):
        """LBR-style: re-match against frames covisible with the best reference whose orientation is close to the
        estimate, keep 2D-3D matches that reproject within ``radius_px``, and re-run PnP."""
        rc = self.conf["refinement"]
        frames = [refs[0]] + self._map.covisible(refs[0], 4 * int(rc["num_frames"]))
        keep = []
        for n in frames:
            if rotation_angle_deg(self._map.pose(n).R, pnp.pose.R) <= rc["max_angle_deg"]:
                keep.append(n)
            if len(keep) >= rc["num_frames"]:
                break
        if not keep:
            return None
        corr = self._correspondences(ctx, keep, {"matching": 0.0})
        if corr is None:
            return None
        q_idx, p_ids, _ = corr
        xyz = self._map.points3D_xyz(p_ids)
        camera = pnp.camera  # with its focal length estimated when it was unknown
        err = reprojection_errors(pnp.pose, camera, _query_features(ctx).keypoints[q_idx], xyz)
        near = err <= rc["radius_px"]
        if near.sum() < self.conf["acceptance"]["min_inliers"]:
            return None
        new = estimate_pose(_query_features(ctx).keypoints[q_idx[near]], xyz[near], camera, self.conf["pnp"])
        if new is None or new.num_inliers < pnp.num_inliers:
            return None
        return new, int(near.sum()), keep


def choose_matcher(configured: Optional[Mapping[str, Any]], meta: Mapping[str, Any],
                   device: str = "auto") -> Tuple[Dict[str, Any], str]:
    """The matcher conf a localizer runs on a map (``meta``: its map.json) and a note when it is not the configured
    one. ``configured`` None: the one the map was built with (its recorded conf, minus the device). A configured
    ``fallback`` (a matcher name, or "map" for the map's own) replaces a matcher that cannot run on the map's features
    here (``Matcher.unavailable``: e.g. EIMP where imp ships no weights for them); the note then says why."""
    if meta.get("matcher"):
        own = {k: v for k, v in dict(meta["matcher"]).items() if k not in ("device", "fallback")}
    else:  # maps from before the matcher was recorded
        fname = meta["features"].get("name")
        own = {"name": "lightglue" if fname in ("aliked", "disk") else "nn"}
    mconf = dict(configured) if configured else dict(own)
    if not mconf.get("name"):
        raise ConfigError("localizer conf 'matcher' needs a 'name'")
    fallback = mconf.pop("fallback", None)
    note = ""
    why = cast(Type[Matcher], MATCHERS.get(mconf["name"])).unavailable(mconf, meta["features"].get("name")) \
        if fallback else None
    if why:
        fb = dict(own) if fallback == "map" else {"name": fallback}
        note = f"matcher {mconf['name']!r}: {why}; using {fb['name']!r} instead (matcher.fallback)"
        mconf = fb
    mconf.setdefault("device", device)
    return mconf, note


def localizer_conf(conf: ConfLike = None, overrides: Overrides = None, preset: Optional[str] = None) -> dict:
    """The localizer's conf by the one config rule (``imp_core.config``): ``Localizer.default_conf`` <- the preset
    (``CONFS``) <- ``conf`` (a YAML file's ``localizer:`` section, or a dict) <- dotted ``overrides``
    (``["coarse.retrieval.top_k=10", "matcher.name=lightglue"]``). The CLI, the ROS node, the benchmarks and the
    demo all build their conf here, so a key means the same wherever imp is started.

    ``preset`` None: "lbr" when a recognition model is given (``recognition: {model: ...}``, or the map's own
    recognizer unless the conf sets ``recognition`` or names the ``coarse`` stages), else "retrieval". The
    recognition conf goes into the preset's "instance" stage. Calling it again on its result changes nothing."""
    user = read_conf(conf, "localizer")
    updates = [user, *parse_overrides(overrides)]
    keys = ("map", "recognition")
    given = merge(dict.fromkeys(keys), *({k: u[k] for k in keys if k in u} for u in updates), where="localizer")
    rec = given["recognition"]
    if preset is None:
        chosen = any("recognition" in u or isinstance(u.get("coarse"), list) for u in updates)
        if not chosen and given["map"]:
            rec = map_recognizer_conf(given["map"])  # the map's own recognizer (`imp map build --recognition`)
        preset = "lbr" if rec else "retrieval"
    if preset not in CONFS:
        raise ConfigError(f"unknown localizer preset {preset!r}; one of: {', '.join(CONFS)}")
    layers: List[Mapping[str, Any]] = [CONFS[preset]]
    if rec:
        layers.append({"recognition": rec})
        if any(s.get("name") == "instance" for s in CONFS[preset].get("coarse", [])):
            layers.append({"coarse": {"instance": rec}})
    return merge(Localizer.default_conf, *layers, *updates, where="localizer")


def _query_features(ctx: QueryContext) -> Features:
    """The query's features (``localize`` sets them before any step reads them)."""
    if ctx.features is None:
        raise RuntimeError("query context without features")
    return ctx.features


def _mode(source: str) -> str:
    """The result's mode from the accepted candidate's source."""
    return "tracking" if source == "tracking" else ("instance" if source.startswith("instance") else "global")


def guess_camera(width: int, height: int) -> Camera:
    """COLMAP's camera for an image without intrinsics: focal 1.2 x the longer side, centred principal point."""
    return Camera("SIMPLE_PINHOLE", width, height, np.array([1.2 * max(width, height), width / 2.0, height / 2.0]))


class _Why:
    """Counts what happened to a frame's candidates, to say why it was not localized."""

    def __init__(self) -> None:
        self.candidates = 0  # proposed by the coarse stages
        self.verified = 0  # with references in the map
        self.max_matches = 0  # most 2D-3D matches of one candidate
        self.ransac_failed = 0
        self.jumps = 0  # tracking poses rejected as jumps away from the prior

    def reason(self, num_keypoints: int, scored: Optional[Scored], acc: Mapping[str, Any]) -> str:
        if num_keypoints == 0:
            return "no keypoints detected in the image"
        if self.candidates == 0 or self.verified == 0:
            return "no retrieval candidate: no reference image proposed"
        if scored is None:
            if self.max_matches < 4:
                return f"too few matches: at most {self.max_matches} 2D-3D matches with the {self.verified} " \
                       "candidate(s)"
            if self.jumps and not self.ransac_failed:
                return "pose rejected: it jumped away from the tracking prior"
            return f"RANSAC failed: no pose from up to {self.max_matches} 2D-3D matches"
        pnp, quality = scored.verified.pnp, scored.quality
        if pnp.num_inliers < acc["min_inliers"]:
            return (f"too few inliers: {pnp.num_inliers} < {acc['min_inliers']} "
                    f"(of {scored.verified.num_matches} 2D-3D matches)")
        return (f"pose rejected by confidence: {quality['confidence']:.2f} < {acc['min_confidence']} "
                f"({pnp.num_inliers} inliers, inlier ratio {quality['inlier_ratio']:.2f}, "
                f"coverage {quality['coverage']:.2f})")
