"""ONNX export: named outputs, a dynamic batch, metadata_props, parity with PyTorch, clear failures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from audience.labels import AGE_CLASSES, GENDER_CLASSES
from audience.model.checkpoint import load_checkpoint, save_checkpoint
from audience.model.network import build_model
from audience.publish import onnx_export

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def load_script():
    from audience.cli import export_onnx

    return export_onnx


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = build_model("tiny", "age+gender")
    with torch.no_grad():  # logits of a trained-like scale, so the tolerance is not met trivially
        model.age.weight.mul_(50)
        model.gender.weight.mul_(50)
    stem = tmp_path_factory.mktemp("onnx") / "best"
    save_checkpoint(stem, model, {"image_size": 64, "temperature": {"age": 1.5, "gender": 0.8},
                                  "dataset": {"name": "audience-demo", "synthetic": True}, "protocol": "folds"})
    return stem.with_name("best.json")


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_export_matches_pytorch_and_carries_its_metadata(checkpoint, tmp_path, capsys, exporter):
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        pytest.skip("the dynamo exporter needs onnxscript (requirements-dev.txt)")
    out = tmp_path / "model.onnx"
    assert load_script().main([str(checkpoint), "--out", str(out), "--exporter", exporter]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.split("max abs difference ")[1].split()[0])
    print(f"\n{exporter} exporter: ONNX vs PyTorch max abs difference {diff:.3g}")
    assert diff <= 1e-4

    graph = onnx.load(str(out))
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["age_classes"]) == list(AGE_CLASSES)
    assert json.loads(props["gender_classes"]) == list(GENDER_CLASSES)
    assert json.loads(props["image_size"]) == 64
    assert json.loads(props["temperature"]) == {"age": 1.5, "gender": 0.8}
    assert len(json.loads(props["mean"])) == 3 and len(json.loads(props["std"])) == 3
    assert json.loads(props["synthetic"]) is True

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["age_logits", "gender_logits"]
    model, _, _ = load_checkpoint(checkpoint)
    image = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(7))  # a batch never exported
    age, gender = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        expected = model(image)
    assert age.shape == (5, 8) and gender.shape == (5, 3)
    assert np.abs(expected["age"].numpy()).max() > 1e-2  # a real signal is compared
    np.testing.assert_allclose(age, expected["age"].numpy(), atol=1e-4)
    np.testing.assert_allclose(gender, expected["gender"].numpy(), atol=1e-4)


def test_single_head_model_has_one_output(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "gender", build_model("tiny", "gender"), {"image_size": 64})
    monkeypatch.setenv("AUDIENCE_MODELS", str(tmp_path / "my-models"))
    result = onnx_export.export_onnx(tmp_path / "gender.json", exporter="legacy")
    # by default into the user's models folder (not tracked by git), never beside a shipped checkpoint
    assert result.path == tmp_path / "my-models" / "gender.onnx" and not (tmp_path / "gender.onnx").exists()
    assert result.outputs == ["gender_logits"] and result.passed()
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["gender_logits"]


def test_parity_failure_exits_1_and_keeps_no_temp_files(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_export, "check_parity", lambda *args, **kwargs: (0.5, 3.0))
    out = tmp_path / "bad.onnx"
    assert load_script().main([str(checkpoint), "--out", str(out), "--exporter", "legacy"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: the ONNX model differs from PyTorch by 0.5, more than 0.0001."]
    assert [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]


@pytest.mark.parametrize(("args", "message"), [
    (["{missing}"], "does not exist"),
    (["{checkpoint}", "--out", "{tmp}/model.txt"], "must end in .onnx"),
    (["{checkpoint}", "--out", "{tmp}/no/such/dir/model.onnx"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(checkpoint, tmp_path, capsys, args, message):
    values = {"missing": tmp_path / "nothing.json", "checkpoint": checkpoint, "tmp": tmp_path}
    assert load_script().main([a.format(**values) for a in args] + ["--exporter", "legacy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not list(tmp_path.glob("*.onnx"))
