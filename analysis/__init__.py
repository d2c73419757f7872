"""Analysis of a finished search: winners, retraining, threshold/F1, confusion matrix, plots, report."""
