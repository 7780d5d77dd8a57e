"""Moved to :mod:`imp_core.stages` (the coarse-stage interface sits below localization, retrieval and
recognition); this name stays for code that imported it from here."""
from ..stages import COARSE_STAGES, Candidate, CoarseStage, QueryContext

__all__ = ["COARSE_STAGES", "Candidate", "CoarseStage", "QueryContext"]
