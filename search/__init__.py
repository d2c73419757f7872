"""The Ray Tune driver: search space, trainable and ``python -m search.run``."""
