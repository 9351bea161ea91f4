"""The JSON line of the GPU check (gpu_check.sh), built from the files its steps left in one folder.

    python -m audience.bench.gpu_report WORK [--dry-run]

WORK holds gpu.json, bench-<arch>.json (benchmark.py train's last line), epoch.json and, with two or
more GPUs, data_parallel.json and parallel_folds.json ({seconds, run_dir} of each timed train.py run).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from audience.bench.train_throughput import ADIENCE_EVAL_IMAGES_PER_FOLD, ADIENCE_TRAIN_IMAGES_PER_FOLD
from audience.files import read_json
from audience.registry import REPORT_KEYS

FOLDS, EPOCHS = 5, 10


def _read(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def benchmark_images_per_s(work: Path) -> dict[str, float]:
    """img/s of a training step per arch: the CUDA section (bf16, channels_last) where there is one, else the
    headline of each benchmark run (the CPU dry run)."""
    rates: dict[str, float] = {}
    for path in sorted(work.glob("bench-*.json")):
        report = _read(path)
        if "cuda" in report:
            rates.update({arch: round(result["images_per_s"], 1) for arch, result in report["cuda"].items()})
        else:
            headline = report["variants"][report["headline_variant"]]
            rates[report["arch"]] = round(headline["step_images_per_s"], 1)
    return rates


def run_result(work: Path, name: str) -> dict | None:
    """{seconds, train images per second, the test accuracies} of a timed run; None when it was not run."""
    timed = _read(work / f"{name}.json")
    if timed is None:
        return None
    run_dir = Path(timed["run_dir"])
    summary = _read(run_dir / "cv_summary.json") or {}
    result = {"seconds": round(timed["seconds"], 1), "arch": summary.get("arch"), "dataset": summary.get("dataset"),
              "folds_done": summary.get("folds_done")}
    for key in REPORT_KEYS:
        result[key] = (summary.get(key) or {}).get("mean")
    epoch_seconds, images = 0.0, 0.0
    for csv in run_dir.glob("fold*/metrics.csv"):
        lines = csv.read_text(encoding="utf-8").strip().splitlines()
        header = lines[0].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=True))
            epoch_seconds += float(row["seconds"])
            images += float(row["images_per_s"]) * float(row["seconds"])
    result["epoch_seconds"] = round(epoch_seconds, 1)
    result["train_images_per_s"] = round(images / epoch_seconds, 1) if epoch_seconds else None
    return result


def cross_validation_estimate(epoch: dict | None, gpus: int) -> dict | None:
    """Minutes of the 5-fold x 10-epoch run on Adience from the measured epoch: one GPU, and with every GPU
    training whole folds in parallel (ceil(5 / GPUs) folds one after another)."""
    if not epoch or not epoch.get("train_images_per_s"):
        return None
    rate = epoch["train_images_per_s"]
    # Validation and test run about 3x faster per image than a training step (no backward pass).
    fold = EPOCHS * (ADIENCE_TRAIN_IMAGES_PER_FOLD / rate + ADIENCE_EVAL_IMAGES_PER_FOLD / (3 * rate))
    return {"folds": FOLDS, "epochs": EPOCHS, "one_gpu_minutes": round(FOLDS * fold / 60, 1),
            "gpus": max(1, gpus), "all_gpus_minutes": round(math.ceil(FOLDS / max(1, gpus)) * fold / 60, 1)}


def build_report(work: Path, dry_run: bool = False) -> dict:
    gpu = _read(work / "gpu.json") or {}
    epoch = run_result(work, "epoch")
    return {"gpu_check": "cpu-dry-run" if dry_run else "gpu", "gpu_name": gpu.get("gpu_name"),
            "gpu_count": gpu.get("gpu_count"), "torch": gpu.get("torch"), "cuda": gpu.get("cuda"),
            "benchmark_train_images_per_s": benchmark_images_per_s(work), "one_epoch": epoch,
            "cv_estimate": cross_validation_estimate(epoch, gpu.get("gpu_count") or 1),
            "data_parallel_smoke": run_result(work, "data_parallel"),
            "parallel_folds_smoke": run_result(work, "parallel_folds")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The JSON line of the GPU check (gpu_check.sh).")
    parser.add_argument("work", type=Path, help="the folder of the check's step outputs")
    parser.add_argument("--dry-run", action="store_true", help="the steps ran on the CPU with tiny sizes")
    args = parser.parse_args(argv)
    print(json.dumps(build_report(args.work, args.dry_run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
