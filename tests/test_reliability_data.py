"""Bad files in a real-looking data folder: each is used or skipped with a named reason, the counts add up, and a
search over the folder completes (``search.run.main`` with the smoke preset)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd
import pytest

from search import run
from tests.reliability.badfiles import make_bad_tree, visible_files
from tests.reliability.record import record

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # never join another Ray
    yield
    ray.shutdown()


def _files_found(data: Path, skipped_paths: set[str]) -> set[str]:
    """Visible files, except those inside a folder the source skipped as a whole, plus those skipped folders."""
    skipped_dirs = {p for p in skipped_paths if Path(p).is_dir() or Path(p).is_symlink() and not Path(p).exists()}
    skipped_dirs |= {p for p in skipped_paths if os.path.isdir(p)}
    files = {str(p) for p in visible_files(data) if not any(str(p).startswith(d + os.sep) for d in skipped_dirs)}
    return files | skipped_dirs


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["kaggle", "classes"])
def test_search_over_a_folder_of_bad_files(layout: str, tmp_path: Path, capsys) -> None:
    data, cases = make_bad_tree(tmp_path / "data", layout)
    code = run.main(
        [
            "--smoke-test",
            "--no-dashboard",
            "--data",
            str(data),
            "--storage-path",
            str(tmp_path),
            "--name",
            "bad",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--num-samples",
            "1",
            "--scheduler",
            "none",
            "--set",
            "space.epochs=1",
            "--set",
            "space.batch_size=[16]",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = tmp_path / "bad"
    table = pd.read_csv(experiment / "results.csv")
    assert len(table) == 1 and (table["status"] == "completed").all(), table[["status", "failure_reason"]]

    used = set(pd.read_csv(experiment / "split_manifest.csv")["path"])
    with open(experiment / "skipped_files.csv", newline="") as fh:
        skipped = {row["path"]: row["reason"] for row in csv.DictReader(fh)}
    assert skipped and all(reason.strip() for reason in skipped.values())
    assert not used & set(skipped)
    found = _files_found(data, set(skipped))
    assert len(used) + len(skipped) == len(found), (sorted(found - used - set(skipped)), sorted(set(skipped) - found))
    assert used | set(skipped) == found

    where = f"tests/test_reliability_data.py::test_search_over_a_folder_of_bad_files[{layout}]"
    kind = "Kaggle layout" if layout == "kaggle" else "class folders"
    for case in cases:
        path = str(case.path) if case.path is not None else None
        if case.expect == "used":
            if path is not None:
                assert path in used, (case.name, skipped.get(path))
            outcome = "used"
        elif case.expect == "skipped":
            if path not in skipped:  # a link and its target: whichever is listed second is the duplicate
                path = str(Path(path).resolve())
            assert path in skipped, case.name
            assert case.reason.lower() in skipped[path].lower(), (case.name, skipped[path])
            outcome = f'skipped: "{skipped[path]}"'
        else:  # hidden files and an empty folder named .jpg: not files a user counts, never listed
            assert path not in used and path not in skipped, case.name
            outcome = "ignored (hidden / not a file), not listed"
        record("Bad files", f"{case.name} ({kind})", "written by tests/reliability/badfiles.py", outcome, where)
    record(
        "Bad files",
        f"search over the whole folder ({kind})",
        f"{len(found)} files found",
        f"search completed; used {len(used)} + skipped {len(skipped)} = found {len(found)}",
        where,
    )
