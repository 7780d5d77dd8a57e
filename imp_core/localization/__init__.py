"""Localization: the Localizer pipeline, coarse stages (tracking, retrieval, instance), PnP with covariance."""
from ..stages import COARSE_STAGES, Candidate, CoarseStage, QueryContext
from .localizer import CONFS, Localizer, localizer_conf
from .pnp import DEFAULT_PNP_CONF, PnPResult, covariance_to_world, estimate_pose

__all__ = ["Localizer", "localizer_conf", "CONFS", "estimate_pose", "PnPResult", "covariance_to_world",
           "DEFAULT_PNP_CONF", "COARSE_STAGES", "Candidate", "CoarseStage", "QueryContext"]
