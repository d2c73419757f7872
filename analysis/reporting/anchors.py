"""The published figures a report is set beside (SPEC.md's anchors), and this report's winner in the same terms."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.scoring.results import ModelResult

#: SPEC.md's reported numbers, on other data and splits: context, not a like-for-like comparison.
ANCHORS: tuple[dict[str, str], ...] = (
    {
        "source": "Study A, VGG16 (Keras)",
        "data / split": "251 images, 3 classes, ~51 test images",
        "metric": "accuracy / F1 (weighted)",
        "value": "0.9804 / 0.9804",
    },
    {
        "source": "Study A, DenseNet121 (Keras)",
        "data / split": "251 images, 3 classes, ~51 test images",
        "metric": "accuracy / F1 (weighted)",
        "value": "0.8824 / 0.8864",
    },
    {
        "source": "Study B, fine-tuned ResNet152V2",
        "data / split": "Kermany, own split; threshold chosen on TEST",
        "metric": "binary best F1 @ threshold",
        "value": "0.8946 @ 0.90",
    },
    {
        "source": "Study B, from-scratch CNN, 3-class",
        "data / split": "Kermany, own split",
        "metric": "3-class validation accuracy",
        "value": "0.8114",
    },
    {
        "source": "Kermany et al. 2018 (InceptionV3)",
        "data / split": "Kaggle test split, 624 images",
        "metric": "accuracy / sensitivity / specificity / AUC",
        "value": "0.928 / 0.932 / 0.901 / 0.968",
    },
)


def build_anchor_table(winners: Sequence[ModelResult], data_label: str) -> pd.DataFrame:
    rows = [dict(a) for a in ANCHORS]
    if winners:
        s = winners[0].summary["mean_std"]
        label = f"This report, winner 1 ({winners[0].trial_id})"
        split = f"{data_label}; threshold chosen on validation"
        rows.append(
            {
                "source": label,
                "data / split": split,
                "metric": "binary F1 @ threshold (test)",
                "value": f"{s['test_f1']} @ {s['threshold']}",
            }
        )
        rows.append(
            {
                "source": label,
                "data / split": split,
                "metric": "accuracy / sensitivity / specificity / AUC",
                "value": " / ".join(
                    s[k] for k in ("test_accuracy", "test_sensitivity", "test_specificity", "test_auc")
                ),
            }
        )
        if "test_accuracy_3class" in s:
            rows.append(
                {
                    "source": label,
                    "data / split": split,
                    "metric": "3-class accuracy / macro-F1 (test)",
                    "value": f"{s['test_accuracy_3class']} / {s['test_macro_f1_3class']}",
                }
            )
    return pd.DataFrame(rows)
