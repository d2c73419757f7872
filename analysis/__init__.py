"""Analysis of a finished search, in rooms by audience, with one command module per public command on top.

Commands (thin: flags, then one call into a room; each keeps its ``python -m`` name):
``analysis.report`` (everything below in one go), ``analysis.retrain``, ``analysis.leaderboard``,
``analysis.search_plots``, ``analysis.predict``, ``analysis.export``, ``analysis.calibrate`` and
``analysis.adapt``. :mod:`analysis.cli` holds what every command does before any work (read the experiment, check
flags, answer bad input with one paragraph and exit code 2).

Rooms, and what each may import (besides :mod:`cxrmodels`, :mod:`search.experiment` and :mod:`analysis.cli`):

- :mod:`analysis.reading`: read an experiment (settings, manifest, results, arrays), its leaderboard and winners,
  and the figures about the search. Imports no other room.
- :mod:`analysis.scoring`: retrain the winners and score every run (thresholds, intervals, operating points,
  calibration, external sets, ensembles). Imports :mod:`analysis.reading`.
- :mod:`analysis.reporting`: the report's content (sections into one document) and its rendering (Markdown, and
  HTML through Jinja2 templates), model cards, MLflow logging. Imports :mod:`analysis.reading` and
  :mod:`analysis.scoring`.
- :mod:`analysis.inference`: a saved model used on new X-rays (load, predict, export to ONNX). Imports no other
  room; it reads an experiment only through :func:`analysis.cli.open_experiment`, to refuse overlapping images.
- :mod:`analysis.site`: a saved model moved to a second site (recalibrated on a few labels, or adapted without
  them). Imports :mod:`analysis.inference` and :mod:`analysis.scoring`'s helpers.

No import runs back up this list, and no two modules import each other (``tests/test_house_rules.py``).
"""
