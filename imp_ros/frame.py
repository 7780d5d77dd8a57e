"""One frame the replay node plays: a dataset query (decoded RGB) or a bag message, with its CameraInfo, ground
truth and, for multi-camera bags, the topics it goes out on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from imp_core.types import Pose


@dataclass
class Frame:
    index: int
    stamp_ns: int
    name: str = ""
    condition: str = ""
    rgb: Optional[np.ndarray] = None  # dataset frames
    msg: Optional[object] = None  # bag frames: the original Image / CompressedImage
    info: Optional[object] = None  # CameraInfo
    map_from_cam: Optional[Pose] = None  # ground truth
    image_topic: str = ""  # multi-camera bags: this camera's image and CameraInfo topics (empty: the node's)
    info_topic: str = ""
    static_tf: Optional[list] = None  # multi-camera bags: the bag's /tf_static transforms (on the first frame)
