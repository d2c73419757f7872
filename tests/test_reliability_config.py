"""Bad configuration: one readable paragraph on stderr before any trial starts, a non-zero exit, no traceback.

Every case runs ``python -m search.run`` as a subprocess (all at once, so the module costs one driver start-up).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.reliability import procs
from tests.reliability.record import record

BASE = ["--smoke-test", "--no-dashboard", "--set", "synthetic_n=60"]

# case -> (extra argv, a fragment the error must contain)
CASES: dict[str, tuple[list[str], str]] = {
    "unknown backbone": (["--backbones", "nosuchnet"], "nosuchnet"),
    "unknown optimizer": (["--set", "space.optimizer=[adamx]"], "adamx"),
    "lr = 0": (["--set", "space.lr=0"], "lr"),
    "lr < 0": (["--set", "space.lr={low: -0.1, high: 0.01}"], "lr"),
    "batch larger than the training set": (["--set", "space.batch_size=[512]"], "training images"),
    "missing data path": (["--data", "/nonexistent/chest_xray"], "no such file or folder"),
    "GPUs requested where there are none": (["--gpus-per-trial", "1"], "no GPU"),
    "unwritable storage path": (["--storage-path", "{file}/sub"], "not writable"),
    "storage path holding another search": (["--name", "taken"], "already holds a search"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, str, Path]]:
    root = tmp_path_factory.mktemp("badcfg")
    (root / "a-file").write_text("not a folder")
    (root / "taken").mkdir()
    (root / "taken" / "tuner.pkl").write_bytes(b"")
    running = {}
    for case, (extra, _) in CASES.items():
        tmp = procs.private_tmp()
        args = [
            *BASE,
            "--storage-path",
            str(root),
            "--name",
            f"x-{len(running)}",
            "--cache-dir",
            str(root / "cache"),
            *[a.replace("{file}", str(root / "a-file")) for a in extra],
        ]
        running[case] = (procs.start_driver(args, tmp), tmp)
    results = {}
    try:
        for case, (proc, _tmp) in running.items():
            try:
                out, err = proc.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                out, err = "", "TIMEOUT"
            results[case] = (proc.returncode, out, err, root)
    finally:
        for proc, tmp in running.values():
            procs.kill_group(proc, tmp)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_configuration_is_one_paragraph_before_any_trial(case: str, outcomes) -> None:
    code, out, err, root = outcomes[case]
    assert code == 2, (code, out[-2000:], err[-3000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    assert CASES[case][1].lower() in errors[0].lower(), errors[0]
    assert not list(root.glob("*/trial_*")), "a trial started"
    record(
        "Bad configuration",
        case,
        "`python -m search.run " + " ".join(CASES[case][0]) + "` (subprocess)",
        f'exit 2, no traceback, before any trial: "{errors[0][:220]}"',
        f"tests/test_reliability_config.py::test_bad_configuration_is_one_paragraph_before_any_trial[{case}]",
    )
