"""Retraining the winners and scoring every run: the evidence the report shows.

Owns the run plan and the runs (:mod:`~analysis.scoring.runs`), where they execute (:mod:`~analysis.scoring.schedule`:
Ray tasks or one after another), the whole retraining (:mod:`~analysis.scoring.pipeline`), each winner's scoring and
files (:mod:`~analysis.scoring.winners`), the ensemble, external sets, thresholds and sweeps
(:mod:`~analysis.scoring.evaluation`), calibration, operating points, bootstrap intervals, the plots of scored runs,
the result types (:mod:`~analysis.scoring.results`) and the retraining flags (:mod:`~analysis.scoring.args`). It may
import :mod:`analysis.reading`, :mod:`cxrmodels` and :mod:`search`'s experiment contract; never the report.
"""
