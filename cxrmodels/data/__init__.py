"""Data sources, decoding, preprocessing, the cache, patient-grouped splits and augmentation."""
