"""Benchmarks: ``python -m bench.<name>`` (docs/benchmarks.md). ``bench.benchlib`` is their shared library (the
machine record, result files, device choice, GPU utilisation)."""
