"""Benchmark: building the preprocessed-image cache vs loading it (memory-mapped), and prepare() cold vs warm.

    python -m bench.cache_speed            # ../shared/data/chest_xray_fullres, 224 px
    python -m bench.cache_speed --quick    # first 60 images only

Prints the figures and writes them to bench/results/cache_speed.json. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from bench.benchlib import machine, write_result
from cxrmodels.data.build import default_workers
from cxrmodels.data.cache import load_or_build
from cxrmodels.data.dataset import prepare
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.sources import load_records

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chest_xray_fullres"
RESULTS = ROOT / "bench" / "results" / "cache_speed.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="data source spec (folder, CSV or synthetic)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=None, help=f"decode threads (default {default_workers()})")
    parser.add_argument("--repeats", type=int, default=5, help="cache loads to time (median reported)")
    parser.add_argument("--quick", action="store_true", help="first 60 images only")
    parser.add_argument("--out", default=str(RESULTS))
    return parser.parse_args(argv)


def time_cache(records: list, cfg: PreprocessConfig, cache_dir: Path, workers: int | None, repeats: int) -> dict:
    """Seconds to build the cache once and to load it (median of ``repeats``), touching every pixel each time."""
    t0 = time.perf_counter()
    built = load_or_build(records, cfg, cache_dir, workers)
    build_s = time.perf_counter() - t0
    loads = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loaded = load_or_build(records, cfg, cache_dir, workers)
        int(loaded.images.sum(dtype="uint64"))  # read every page: a lazy memmap alone would flatter the load
        loads.append(time.perf_counter() - t0)
    load_s = statistics.median(loads)
    return {
        "images": int(built.images.shape[0]),
        "skipped": len(built.skipped),
        "build_s": round(build_s, 4),
        "load_s": round(load_s, 5),
        "ratio": round(build_s / load_s, 1),
        "cache_mb": round(built.path.stat().st_size / 2**20, 2),
    }


def time_prepare(data: str, cfg: PreprocessConfig, cache_dir: Path, workers: int | None) -> dict:
    """prepare() end to end (listing, cache, hashes, split) cold vs warm."""
    t0 = time.perf_counter()
    prepare(data, cfg, cache_dir=cache_dir, workers=workers)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepare(data, cfg, cache_dir=cache_dir, workers=workers)
    warm = time.perf_counter() - t0
    return {"prepare_cold_s": round(cold, 3), "prepare_warm_s": round(warm, 3), "prepare_ratio": round(cold / warm, 1)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = PreprocessConfig(size=args.size)
    records = load_records(args.data).records
    if args.quick:
        records = records[:60]
    result = {
        "data": args.data,
        "size": args.size,
        "preprocess": cfg.to_dict(),
        "quick": args.quick,
        "workers": args.workers or default_workers(),
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        result.update(time_cache(records, cfg, Path(tmp) / "cache", args.workers, args.repeats))
        if not args.quick:
            result.update(time_prepare(args.data, cfg, Path(tmp) / "prepare", args.workers))
    print(json.dumps(result, indent=1))
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
