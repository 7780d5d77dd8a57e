"""LBR: localization by global instance recognition.

- ``instances``: cluster a map's 3D points into global instances, paint label masks into the database images,
  keep the instance index and keypoint labels (``annotate_map``); read LBR's colour-coded masks.
- ``network`` / ``recognizer``: PSPNet-style segmentation + multi-label heads on a configurable encoder
  (small CNN, or ResNeXt101-32x4d loading official LBR checkpoints); global descriptor from the encoder.
- ``augment`` / ``train`` / ``pipeline``: day-to-night augmentation, OHEM CE + BCE training with resume.
- ``evaluate`` / ``metrics``: mIoU and top-1 instance accuracy.
- ``coarse``: the "instance" coarse stage; ``label_matcher``: the "label_nn" matcher (NNML).
- ``commands``: `imp instances`, `imp train-recognition`, `imp eval-recognition`.
"""
