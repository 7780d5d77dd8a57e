"""Evaluation of the recognition network (LBR): ``metrics`` (mean IoU over instances, top-1 instance accuracy) and
``evaluate`` (ground-truth label maps from depth + pose or stored masks, scores per condition).

The network is in ``imp_core/recognition``, its training in ``imp_core/training/recognition``."""
