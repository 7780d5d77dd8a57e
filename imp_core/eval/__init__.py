"""Evaluation: accuracy metrics, result/trajectory formats, tables and plots."""
from .metrics import THRESHOLDS, evaluate, evaluate_queries, query_errors

__all__ = ["THRESHOLDS", "evaluate", "evaluate_queries", "query_errors"]
