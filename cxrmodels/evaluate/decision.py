"""One decision per X-ray: the rule that predict, the report's tables, the confusion matrix, Grad-CAM and the model
card all use, so no output can call an image NORMAL in one column and BACTERIAL in the next.

- Binary model: PNEUMONIA exactly when ``P(PNEUMONIA) >= threshold``, else NORMAL.
- 3-class model: NORMAL exactly when ``P(pneumonia) = 1 - P(NORMAL)`` is below the threshold; otherwise the likelier
  of the pneumonia subtypes (BACTERIAL or VIRAL, by their own probabilities).

The threshold is the one chosen on validation (or a site's labels, or an operating point); without one, the
arg-max of a model's probabilities is the same rule at no particular threshold, and is used only where no threshold
has been chosen yet (the search's per-epoch metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrmodels.data.records import NORMAL
from cxrmodels.evaluate.binary import pneumonia_probability

#: The threshold of a model for which none was chosen (a bare ``cxrmodels.train`` checkpoint).
DEFAULT_THRESHOLD = 0.5


def decide(probs: np.ndarray, class_names: Sequence[str], threshold: float) -> np.ndarray:
    """Class indices (into ``class_names``) of the decision for each row of ``probs`` (n, k) at ``threshold``."""
    names = list(class_names)
    p = np.asarray(probs, dtype=np.float64)
    pneumonia = pneumonia_probability(p, names) >= float(threshold)
    normal = names.index(NORMAL)
    if p.ndim == 1 or p.shape[1] == 1:
        return np.where(pneumonia, 1 - normal, normal).astype(np.int64)
    subtypes = p.copy()
    subtypes[:, normal] = -np.inf  # the likelier pneumonia class, whatever P(NORMAL) is
    return np.where(pneumonia, subtypes.argmax(axis=1), normal).astype(np.int64)


def decision_names(probs: np.ndarray, class_names: Sequence[str], threshold: float) -> list[str]:
    """:func:`decide` as class names."""
    names = list(class_names)
    return [names[k] for k in decide(probs, names, threshold)]


RULE = (
    "one decision per image: NORMAL exactly when P(pneumonia) is below the threshold; otherwise PNEUMONIA for a "
    "binary model, or the likelier pneumonia subtype (BACTERIAL or VIRAL) for a 3-class model"
)
