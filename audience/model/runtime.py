"""The classifier's forward pass through ONNX Runtime: the same logits as PyTorch, several times faster on a CPU.

A loaded model is exported once (torch.onnx, the TorchScript exporter) to an ONNX file in the app's own
cache, `AUDIENCE_HOME/onnx/`, never beside the checkpoint (checkpoints/ holds what is shipped and
promoted, under a Space's 10 MB a file). The file is named by a hash of the weights, the input size
and the library versions, so a retrained or edited checkpoint gets its own; at most KEEP_FILES are
kept (the least recently used go). Every session is checked against the PyTorch model on random
batches before it is used (`PARITY_TOLERANCE`); when onnxruntime is missing, the export fails or the
outputs differ, the caller keeps PyTorch (`onnx_forward` returns None and says why in the log).
Measured in docs/measurements.md (Predict latency per stage).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from audience.files import atomic_path
from audience.settings import home_dir

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OPSET = 18
PARITY_BATCHES = (1, 3)  # two sizes: the batch axis must really be dynamic
PARITY_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| over the logits (measured: about 1e-6)
KEEP_FILES = 4

Forward = Callable[[np.ndarray], dict[str, np.ndarray]]


class LogitsTuple(torch.nn.Module):
    """The model's dict of head logits as a tuple in a fixed order (ONNX outputs are positional)."""

    def __init__(self, model: torch.nn.Module, heads: tuple[str, ...]):
        super().__init__()
        self.model, self.heads = model, heads

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(image)
        return tuple(logits[head] for head in self.heads)


def onnx_dir() -> Path:
    return home_dir() / "onnx"


def export_logits(wrapper: torch.nn.Module, example: torch.Tensor, path: Path, outputs: list[str], opset: int = OPSET,
                  exporter: str = "legacy") -> None:
    """torch.onnx.export of `wrapper` to `path` with a dynamic batch axis (dynamo: needs onnxscript)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)  # the legacy exporter's notice
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        if exporter == "dynamo":
            torch.onnx.export(wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=opset,
                              dynamo=True, external_data=False, verbose=False, report=False)
        else:
            axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]}
            torch.onnx.export(wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_axes=axes, opset_version=opset, dynamo=False)


def _cache_name(model: torch.nn.Module, heads: tuple[str, ...], image_size: int) -> str:
    import onnxruntime

    digest = hashlib.sha256()
    # the buffers too: a prior correction (age_adjustment) is not saved with the weights but changes the outputs
    buffers = ((f"buffer:{name}", tensor) for name, tensor in model.named_buffers() if tensor is not None)
    for name, tensor in (*model.state_dict().items(), *buffers):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    # and the mirror averaging, a switch of forward's rather than a tensor
    flip = bool(getattr(model, "flip_average", False))
    digest.update(f"{heads}|{image_size}|{flip}|{torch.__version__}|{onnxruntime.__version__}|{OPSET}".encode())
    return f"{digest.hexdigest()[:24]}.onnx"


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    # Threads that spin while waiting for work take the core from the detector and from other requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(session, wrapper: torch.nn.Module, image_size: int, seed: int = 0) -> float:
    """max |ONNX Runtime - PyTorch| over every output on random batches of PARITY_BATCHES sizes."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in PARITY_BATCHES:
        image = torch.randn(batch, 3, image_size, image_size, generator=generator)
        with torch.inference_mode():
            expected = [t.float().numpy() for t in wrapper(image)]
        got = session.run(None, {INPUT_NAME: image.numpy()})
        for want, have in zip(expected, got, strict=True):
            if want.shape != have.shape:
                return float("inf")
            worst = max(worst, float(np.abs(want - have).max()))
    return worst


def _drop_old_files(folder: Path, keep: Path) -> None:
    files = sorted(folder.glob("*.onnx"), key=lambda path: path.stat().st_mtime, reverse=True)
    for path in [p for p in files if p != keep][KEEP_FILES - 1:]:
        path.unlink(missing_ok=True)


def onnx_forward(model: torch.nn.Module, heads: tuple[str, ...], image_size: int, threads: int | None = None,
                 folder: Path | None = None) -> Forward | None:
    """A function batch (N, 3, S, S float32) -> {head: logits (N, classes)} running `model` in ONNX Runtime,
    or None when that cannot be had with PyTorch's outputs (the reason is logged)."""
    if importlib.util.find_spec("onnxruntime") is None:
        log.info("onnxruntime is not installed: the classifier runs in PyTorch")
        return None
    folder = Path(folder) if folder is not None else onnx_dir()
    # a years age head adds its logits over the years (network.YEARS_OUTPUT) to the heads' outputs
    heads = tuple(heads) + tuple(name for name in getattr(model, "outputs", ()) if name not in heads)
    wrapper = LogitsTuple(model.float().eval(), heads).eval()
    outputs = [f"{head}_logits" for head in heads]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / _cache_name(model, heads, image_size)
        if not path.is_file():
            with atomic_path(path, suffix=".tmp.onnx") as temp:
                export_logits(wrapper, torch.zeros(2, 3, image_size, image_size), temp, outputs)
        path.touch()
        _drop_old_files(folder, path)
        session = _session(path, threads or torch.get_num_threads())
        difference = parity(session, wrapper, image_size)
    except Exception as error:  # noqa: BLE001 - whatever stops the export, PyTorch still answers
        log.warning("ONNX Runtime unavailable for this model (%s: %s); the classifier runs in PyTorch",
                    type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
        return None
    if not difference <= PARITY_TOLERANCE:
        log.warning("ONNX Runtime's logits differ from PyTorch's by %.2g; the classifier runs in PyTorch", difference)
        return None

    def forward(batch: np.ndarray) -> dict[str, np.ndarray]:
        logits = session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return dict(zip(heads, logits, strict=True))

    return forward
