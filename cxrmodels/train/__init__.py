"""TrialConfig, the one-epoch-at-a-time Trainer with pure train/evaluate functions, metrics and checkpoints.

Import from the submodules (``cxrmodels.train.config``, ``.loop``, ``.metrics``, ``.checkpoint``); this package
module stays light so that ``from cxrmodels.train.config import TrialConfig`` does not pull in the whole loop.
"""
