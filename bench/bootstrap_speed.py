"""How long do the report's bootstrap intervals take? 2,000 patient resamples of 800 images, binary and 3-class.

    python -m bench.bootstrap_speed            # 800 images of 400 patients, 2,000 resamples, 5 repeats
    python -m bench.bootstrap_speed --quick    # one repeat (results in bootstrap_speed_quick.json, not tracked)

Issue 15 asks for under 10 s on 2 cores. Writes bench/results/bootstrap_speed.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.benchlib import machine, write_result
from cxrmodels.evaluate.bootstrap import N_RESAMPLES, binary_intervals, multiclass_intervals

RESULTS = Path(__file__).resolve().parent / "results"


def one_report(n_images: int, resamples: int, seed: int) -> float:
    """Seconds for the headline intervals of one model on one set: binary (five figures) and 3-class (four)."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_images // 2, n_images)
    y3 = rng.integers(0, 3, n_images)
    probs = rng.dirichlet(np.ones(3), n_images)
    start = time.perf_counter()
    binary_intervals((y3 > 0).astype(int), 1 - probs[:, 0], 0.5, groups, n=resamples, seed=seed)
    multiclass_intervals(y3, probs, ["NORMAL", "BACTERIAL", "VIRAL"], groups, n=resamples, seed=seed)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--resamples", type=int, default=N_RESAMPLES)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    seconds = [one_report(args.images, args.resamples, seed) for seed in range(repeats)]
    result = {
        "machine": machine(),
        "images": args.images,
        "patients": args.images // 2,
        "resamples": args.resamples,
        "seconds": [round(s, 3) for s in seconds],
        "median_s": round(float(np.median(seconds)), 3),
    }
    out = write_result(result, RESULTS / f"bootstrap_speed{'_quick' if args.quick else ''}.json")
    print(f"{args.resamples} resamples of {args.images} images: median {result['median_s']} s; wrote {out}")
    return result


if __name__ == "__main__":
    main()
