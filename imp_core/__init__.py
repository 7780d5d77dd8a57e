"""imp_core: the ROS-free visual localization library of imp."""
__version__ = "0.1.0"
