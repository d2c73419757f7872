"""Reading an experiment: what :mod:`search.run` left in its folder, as tables and arrays.

Owns :class:`~analysis.reading.experiment.Experiment` (settings, split manifest, results, per-trial progress, the
split's arrays), the leaderboard and the winner rule (:mod:`analysis.reading.leaderboard`) and the figures about
the search itself (:mod:`analysis.reading.search_plots`). It may import :mod:`cxrmodels` and :mod:`search`'s
experiment contract, and no other part of :mod:`analysis`.
"""
