"""Datasets: readers of localization dataset layouts (the synthetic world that ``imp_core.world`` generates, Aachen
Day-Night v1.1, RobotCar Seasons) and layout detection (``open_dataset``)."""
from .base import DatasetError, LocalizationDataset, QueryItem
from .detect import open_dataset
from .synthetic import SyntheticWorld

__all__ = ["DatasetError", "LocalizationDataset", "QueryItem", "open_dataset", "SyntheticWorld"]
