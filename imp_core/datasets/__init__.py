"""Datasets: the embedded synthetic street and readers for real benchmark layouts (Aachen v1.1, RobotCar)."""
from .base import DatasetError, LocalizationDataset, QueryItem
from .detect import open_dataset
from .synthetic import SyntheticWorld, make_world

__all__ = ["DatasetError", "LocalizationDataset", "QueryItem", "open_dataset", "SyntheticWorld", "make_world"]
