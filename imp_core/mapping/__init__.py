"""Map building (triangulation from known poses or SfM) and the versioned map format."""
from .build import DEFAULT_BUILD_CONF, ImageFolder, build_map
from .format import MAP_FORMAT, MAP_VERSION, LocalizationMap, MapError, read_map_meta

__all__ = ["build_map", "ImageFolder", "DEFAULT_BUILD_CONF", "LocalizationMap", "MapError", "read_map_meta",
           "MAP_FORMAT", "MAP_VERSION"]
