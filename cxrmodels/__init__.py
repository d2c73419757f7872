"""cxrmodels: the library behind the chest X-ray search.

Data sources, preprocessing, caching, splits, models and the training loop. It imports neither ray nor optuna
(the drivers in ``search`` and ``analysis`` do), so every piece can be used and tested on its own.
"""

__version__ = "0.1.0"
