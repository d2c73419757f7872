"""Using a saved model on new X-rays: load it (PyTorch checkpoint or ONNX), read and preprocess images as it was
trained, predict with its one decision rule and calibration, explain with Grad-CAM, export to ONNX.

Owns :mod:`~analysis.inference.loading` (models and their settings), :mod:`~analysis.inference.images` (inputs),
:mod:`~analysis.inference.predict` (the predictions, tables and summaries) and :mod:`~analysis.inference.export`.
It may import :mod:`cxrmodels` and :mod:`analysis.cli`, and no other room, so a deployment needs neither the search
nor the report.
"""
