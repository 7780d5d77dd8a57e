"""The root of imp's own errors.

Every error imp raises on purpose for bad input (a conf, a map, a dataset, a weight file, a message) derives from
:class:`ImpError`, so a front end (the ``imp`` command, a ROS node) catches one type and prints the message, which
names the file, key or topic at fault. Each error keeps the builtin base its callers may already catch
(``ConfigError`` is a ``ValueError``, ``WeightsNotFoundError`` a ``FileNotFoundError``...), so ``except ValueError``
around a conf check keeps working.

The classes live next to the code that raises them; they are listed here for reference:

==========================  ==========================================  ===========================
class                       module                                      builtin base
==========================  ==========================================  ===========================
ConfigError                 imp_core.config                             ValueError
UnsafePathError             imp_core.paths                              ValueError
UnsafePickleError           imp_core.training.safe_npz                  ValueError
WeightsError                imp_core.features.weights                   ValueError
WeightsNotFoundError        imp_core.features.weights                   FileNotFoundError (+ above)
DatasetError                imp_core.errors (datasets.base re-exports)  ValueError
MapError                    imp_core.mapping.format                     RuntimeError
RayUnavailable              imp_core.localization.distributed           RuntimeError
WorkerFailed                imp_core.localization.distributed           RuntimeError
UnknownModelError           imp_core.registry                           KeyError
DeviceError                 imp_core.device                             RuntimeError
FormatError                 imp_core.eval.formats                       ValueError
CameraError                 imp_core.types                              ValueError
ImageTooLargeError          imp_core.imageio                            ValueError
BagError                    imp_ros.bags                                RuntimeError
TransformLookupError        imp_ros.tf_buffer                           LookupError
ConversionError             imp_ros.conversions                         ValueError
GraphError                  imp_ros.graph                               ValueError
==========================  ==========================================  ===========================
"""
from __future__ import annotations


class ImpError(Exception):
    """An error imp raises on purpose; its message names what is wrong and, where it can, how to fix it."""


class DatasetError(ImpError, ValueError):
    """A dataset directory or file is missing or malformed (the message names it). Here rather than in
    ``datasets.base`` because the COLMAP readers below the dataset interface raise it too."""
