"""The IMP matcher family (GM, IMP, EIMP): model, official checkpoints, iterative inference, registry entries."""
