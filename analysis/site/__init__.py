"""A saved model at a new site: its decision moved to the site's own X-rays, with or without their labels.

Owns :mod:`~analysis.site.data` (a site's images as the model sees them, and its raw probabilities on them),
:mod:`~analysis.site.recalibrate` (threshold, temperature and operating points chosen again on a few labelled site
X-rays, with out-of-bag and label-count estimates of what that is worth; ``python -m analysis.calibrate``) and
:mod:`~analysis.site.adapt` (batch-norm statistics, class prevalence and the operating point from the site's
unlabelled images; ``python -m analysis.adapt``, ``analysis.predict --adapt``; the methods by name in the torch-free
:mod:`~analysis.site.methods`) and :mod:`~analysis.site.compare` (the three versions side by side on held-out site
images; ``python -m analysis.site_versions``, ``analysis.report --site``). The result is always one
``ModelCheckpoint`` that records what it used, so ``analysis.predict``, ``analysis.export`` and the report take it
like any other. It may import :mod:`analysis.inference`, :mod:`analysis.scoring`'s helpers, :mod:`analysis.cli` and
:mod:`cxrmodels`; no room below it imports it.
"""
