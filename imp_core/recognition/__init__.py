"""LBR: localization by global instance recognition. Online parts and map annotation live here; the network's
training is in ``imp_core/training/recognition`` and its evaluation in ``imp_core/eval/recognition``.

- ``network`` / ``recognizer``: PSPNet-style segmentation + multi-label heads on a configurable encoder
  (small CNN, or ResNeXt101-32x4d loading official LBR checkpoints); global descriptor from the encoder.
- ``coarse``: the "instance" coarse stage; ``label_matcher``: the "label_nn" matcher (NNML).
- ``instances``: cluster a map's 3D points into global instances, paint label masks into the database images,
  keep the instance index and keypoint labels (``annotate_map``).
- ``masks``: label maps (from keypoints, from depth), mask PNGs, LBR's colour-coded masks, instance layouts.
- ``database``: the map's database images (``map_image_loader``) and their recognition descriptors.
- ``map_recognizer``: a map's recognizer as the localizer sees it (model card, ``map_recognizer_conf``),
  installing a trained model on a map, its self-check; ``night``: the simulated night look.
- ``commands``: `imp instances`, `imp train-recognition`, `imp eval-recognition`, `imp recognition ...`.
"""
