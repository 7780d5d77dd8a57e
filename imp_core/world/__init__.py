"""The synthetic world: a procedurally built street (``scene``), its renderer (``render``, ``textures``), the
world directory with exact poses, depth and instance masks (``synthetic``: ``make_world`` writes it,
``SyntheticWorld`` reads it as a localization dataset) and its export to the Aachen / RobotCar layouts (``export``).
``imp world`` (``commands``) runs it from the command line."""
from .synthetic import SyntheticWorld, is_synthetic_world, make_world, use_or_make_world

__all__ = ["SyntheticWorld", "is_synthetic_world", "make_world", "use_or_make_world"]
