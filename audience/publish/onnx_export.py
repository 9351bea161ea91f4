"""ONNX export of a checkpoint, with a parity check against PyTorch through onnxruntime.

The graph takes `image` (N, 3, S, S) float32, RGB, normalised with the embedded mean/std, N dynamic,
and returns the raw logits `age_logits` (N, 8) and/or `gender_logits` (N, 3) of the task's heads;
softmax(logits / temperature) gives the calibrated probabilities the app shows. Everything a runtime
needs (class names, image size, mean, std, temperature, ...) is in the model's metadata_props.

torch.onnx's dynamo exporter (which needs the onnxscript package) is used when onnxscript is
installed; otherwise the legacy TorchScript exporter, deprecated in torch but still working here.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audience import settings
from audience.errors import AudienceError, quoted, shorten
from audience.files import atomic_path
from audience.model.checkpoint import checkpoint_paths, load_checkpoint
from audience.model.metadata import CheckpointMetadata, DatasetInfo
from audience.model.runtime import INPUT_NAME, export_logits
from audience.model.runtime import LogitsTuple as _LogitsTuple

DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 3)  # two batch sizes: the batch axis must really be dynamic


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "legacy"
    outputs: list[str]
    max_abs_diff: float  # over PARITY_BATCHES, every output
    max_abs_logit: float  # scale of the compared logits, to read the difference against

    def passed(self, tolerance: float = DEFAULT_TOLERANCE) -> bool:
        return self.max_abs_diff <= tolerance


def choose_exporter(requested: str = "auto") -> str:
    if requested not in ("auto", "dynamo", "legacy"):
        raise AudienceError(f"Unknown exporter {quoted(requested)}: use auto, dynamo or legacy.")
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if requested == "dynamo" and not has_onnxscript:
        raise AudienceError("The dynamo exporter needs the onnxscript package: pip install onnxscript.")
    if requested == "auto":
        return "dynamo" if has_onnxscript else "legacy"
    return requested


def onnx_metadata(metadata: CheckpointMetadata, heads: tuple[str, ...]) -> dict[str, str]:
    """String key/values for the ONNX model's metadata_props (JSON for lists and dicts)."""
    dataset = metadata.dataset or DatasetInfo()
    values = {
        "audience.arch": metadata.arch, "audience.task": metadata.task,
        "audience.outputs": [f"{head}_logits" for head in heads],
        "age_classes": metadata.age_classes, "gender_classes": metadata.gender_classes,
        "image_size": metadata.image_size, "mean": metadata.mean, "std": metadata.std,
        "temperature": metadata.temperature,
        "age_head": metadata.age_head, "age_prior": metadata.age_prior, "prior_tau": metadata.prior_tau,
        "input": f"{INPUT_NAME}: float32 (N, 3, S, S), S = image_size: a face crop, longest side resized to S and "
                 "black-padded to S x S, RGB / 255, then (x - mean) / std per channel",
        "probabilities": "softmax(logits / temperature[head]) per head",
        "dataset": dataset.name, "synthetic": dataset.synthetic,
        "protocol": metadata.protocol, "fold": metadata.fold,
        "source_weights_sha256": None if metadata.weights is None else metadata.weights.sha256,
    }
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}


def _export(wrapper: torch.nn.Module, example: torch.Tensor, path: Path, outputs: list[str], opset: int,
            exporter: str) -> None:
    export_logits(wrapper, example, path, outputs, opset, exporter)


def _embed_metadata(path: Path, props: dict[str, str], doc: str) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = doc
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def check_parity(path: Path, wrapper: torch.nn.Module, image_size: int, seed: int = 0) -> tuple[float, float]:
    """(max |onnxruntime - PyTorch| over every output and PARITY_BATCHES, max |PyTorch logit|) on random inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 0.0
    for batch in PARITY_BATCHES:
        image = torch.randn(batch, 3, image_size, image_size, generator=generator)
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(image)]
        got = session.run(None, {INPUT_NAME: image.numpy()})
        for want, have in zip(expected, got, strict=True):
            if want.shape != have.shape:
                raise AudienceError(f"ONNX output of shape {have.shape} where PyTorch gives {want.shape} "
                                    f"(batch {batch}): the export is wrong.")
            worst = max(worst, float(np.abs(want - have).max()))
            scale = max(scale, float(np.abs(want).max()))
    return worst, scale


def opset_range(exporter: str) -> tuple[int, int]:
    """The ONNX opsets torch.onnx writes with `exporter` (dynamo: from 18; the TorchScript one: up to its maximum)."""
    from torch.onnx import _constants

    if exporter == "dynamo":
        return max(DEFAULT_OPSET, _constants.ONNX_MIN_OPSET), _constants.ONNX_MAX_OPSET
    return _constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


def check_opset(opset, exporter: str) -> int:
    """`opset` when `exporter` can write it, else AudienceError naming the range (torch would warn and write
    another opset, or fail deep in the converter)."""
    low, high = opset_range(exporter)
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise AudienceError(f"--opset must be a whole number from {low} to {high} for the {exporter} exporter, "
                            f"not {shorten(opset, 40)}.")
    return opset


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, opset: int = DEFAULT_OPSET,
                exporter: str = "auto") -> ExportResult:
    """Export `checkpoint` to ONNX at `out` (default: the user's models folder, settings.models_dir()/<stem>.onnx,
    which git does not track) and check it against PyTorch.

    The file is written to a temporary name and renamed into place only after the metadata is
    embedded and the model passes onnx.checker; parity is measured, not enforced (see ExportResult.passed).
    """
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise AudienceError(f"ONNX export needs {' and '.join(missing)}, which are missing here: "
                            "pip install -r requirements.txt (make run does).")
    exporter = choose_exporter(exporter)
    check_opset(opset, exporter)
    _, json_path = checkpoint_paths(checkpoint)
    model, _, metadata = load_checkpoint(json_path)
    heads = tuple(model.outputs)  # the task's heads, and the years logits of a years age head
    outputs = [f"{head}_logits" for head in heads]
    size = metadata.image_size
    if out is None:
        folder = settings.models_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise AudienceError(f"Cannot create the models folder {folder} ({error.strerror or error}); "
                                "give --out or set AUDIENCE_MODELS.") from None
    target = Path(out) if out is not None else settings.models_dir() / json_path.with_suffix(".onnx").name
    if target.suffix != ".onnx":
        raise AudienceError(f"Output {target} must end in .onnx.")
    if not target.parent.is_dir():
        raise AudienceError(f"Output folder {target.parent} does not exist.")
    wrapper = _LogitsTuple(model.eval(), heads).eval()
    with atomic_path(target, suffix=".tmp.onnx") as temp:  # onnx wants the .onnx suffix
        example = torch.zeros(2, 3, size, size)
        try:
            _export(wrapper, example, temp, outputs, opset, exporter)
        except Exception as error:  # noqa: BLE001 - any exporter failure is one sentence for the user
            raise AudienceError(f"torch.onnx ({exporter} exporter, opset {opset}) could not export "
                                f"{metadata.arch}: {str(error).splitlines()[0][:200]}") from error
        doc = f"Audience {metadata.arch} {metadata.task} from {json_path.name}; see metadata_props."
        _embed_metadata(temp, onnx_metadata(metadata, heads), doc)
        diff, scale = check_parity(temp, wrapper, size)
    return ExportResult(path=target, exporter=exporter, outputs=outputs, max_abs_diff=diff, max_abs_logit=scale)
