"""Training of the recognition network (LBR):

- ``augment``: random affine crops and photometric changes with the day-to-night style;
- ``train``: OHEM cross-entropy + BCE training with resume, logs, checkpoints and a loss PNG;
- ``pipeline``: train a map's recognizer (``train_on_map``; ``build_recognizer`` under a wall-clock budget, with
  the model card).

The network itself and what runs it online are in ``imp_core/recognition``; its evaluation in
``imp_core/eval/recognition``.
"""
