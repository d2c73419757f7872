"""The error every image reader raises for a file it cannot use (:mod:`cxrmodels.data.decode` for JPEG/PNG,
:mod:`cxrmodels.data.dicom` for DICOM): both import it from here, and the readers' callers catch this one type."""

from __future__ import annotations


class UnreadableImage(ValueError):
    """The file is empty, truncated or not an image; ``reason`` says which, for the skipped-files report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
