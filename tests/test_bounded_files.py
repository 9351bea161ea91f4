"""Issue 20 items 2 and 9: a file the app reads cannot stop it, and a checkpoint cannot make it answer NaN.

Every JSON file (checkpoint metadata, run files, caches' indexes) is read by audience.files.read_json within a
size and nesting bound; a bad one is one row in the Compare tab's problems column and one sentence from /predict
and /promote, never a crash of `python app.py` nor a bare `event: error`. A checkpoint whose temperature, mean or
std would overflow the network's input or output is refused by the schema, and weights that give NaN anyway get
a sentence instead of null probabilities. Checked over raw HTTP against a server started as a public deployment.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from fixtures.app_server import save_tiny_checkpoint, start_app_server
from PIL import Image
from test_api_inputs import upload
from test_bad_inputs import call_raw, sse_data
from test_compare import make_run

from audience.errors import AudienceError
from audience.files import JSON_MAX_BYTES, JSON_MAX_DEPTH, JsonFileError, read_json
from audience.model.checkpoint import load_checkpoint, save_checkpoint
from audience.model.metadata import MEAN_LIMIT, STD_RANGE, TEMPERATURE_LIMITS
from audience.model.network import build_model
from audience.predict.predictor import Predictor
from audience.train.runs import read_run

DEEP_LIST = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000
LONG_NUMBER = '{"format_version": ' + "9" * 5000 + "}"
DEEPER = f"nested deeper than {JSON_MAX_DEPTH} levels"


# --- the reader ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "reason"), [
    (DEEP_LIST, DEEPER), (DEEP_OBJECT, DEEPER), (LONG_NUMBER, "a number with too many digits"),
    ("[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1), DEEPER),  # parses, but deeper than the bound
    ("{truncated", "not valid JSON: "), (b"\xff\xfe{}", "not UTF-8 text"),
])
def test_bad_json_files_raise_one_reason(tmp_path, text, reason):
    path = tmp_path / "bad.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(JsonFileError) as refused:
        read_json(path)
    assert refused.value.reason.startswith(reason), refused.value.reason
    assert isinstance(refused.value, ValueError)  # the readers' `except (OSError, ValueError)` keep working


def test_the_reader_takes_what_is_within_its_bounds(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text("[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH)
    assert read_json(path) is not None
    path.write_text(json.dumps({"n": int("9" * 4000), "s": "x" * 1000}))
    assert read_json(path)["s"] == "x" * 1000


def test_the_reader_bounds_the_size_and_opens_no_fifo(tmp_path):
    big = tmp_path / "big.json"
    big.write_text("[" + "1," * 100 + "1]")
    with pytest.raises(JsonFileError, match="larger than 100 bytes"):
        read_json(big, max_bytes=100)
    assert JSON_MAX_BYTES >= 1 << 20
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(JsonFileError, match="not a regular file"):
        read_json(fifo)
    assert time.monotonic() - started < 5
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json")


def test_a_run_with_wrong_types_is_read_with_problems(tmp_path):
    run = make_run(tmp_path, "20200101-000000-tiny-folds", folds={0: (8, 8)})
    (run / "config.json").write_text(json.dumps({"arch": [], "image_size": 32}))
    (run / "status.json").write_text(json.dumps({"state": {"a": 1}, "pid": 1}))
    (run / "fold0" / "test_metrics.json").write_text(json.dumps({"summary": {"age_exact": "x"}}))
    info = read_run(run)
    assert info.config is None and info.status is None and 0 not in info.test_metrics
    assert [e.split(":")[0] for e in info.errors] == ["config.json", "status.json", "fold0/test_metrics.json"]
    assert info.state == "unknown"


# --- the checkpoint schema and non-finite outputs --------------------------------------------------------


def tiny_checkpoint(folder, name: str, **changes):
    path = save_tiny_checkpoint(folder, name)
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


OVERFLOWING = {  # name: (change, the field the sentence names)
    "temperature-1e-300": ({"temperature": {"age": 1e-300, "gender": 1.0}}, "temperature.age"),
    "std-1e-300": ({"std": [1e-300, 0.2, 0.2]}, "std.0"),
    "mean-1e308": ({"mean": [1e308, 0.5, 0.5]}, "mean.0"),
}


@pytest.mark.parametrize("name", sorted(OVERFLOWING))
def test_the_schema_bounds_normalisation_and_temperature(tmp_path, name):
    change, field = OVERFLOWING[name]
    path = tiny_checkpoint(tmp_path, name, **change)
    with pytest.raises(AudienceError, match=field.replace(".", r"\.")):
        load_checkpoint(path)


def test_the_bounds_hold_every_real_normalisation(tmp_path):
    assert TEMPERATURE_LIMITS[0] <= 0.5 and TEMPERATURE_LIMITS[1] >= 5.0  # the calibration's range
    assert STD_RANGE[0] <= 0.2 <= STD_RANGE[1] and MEAN_LIMIT >= 1.0
    path = tiny_checkpoint(tmp_path, "edges", mean=[-MEAN_LIMIT, 0.0, MEAN_LIMIT], std=list(STD_RANGE) + [0.5],
                           temperature={"age": TEMPERATURE_LIMITS[0], "gender": TEMPERATURE_LIMITS[1]})
    load_checkpoint(path)


def save_nan_checkpoint(folder, name: str = "nan-weights"):
    """A schema-valid checkpoint whose weights hold NaN (sha256 and all recorded as save_checkpoint does)."""
    torch.manual_seed(0)
    model = build_model("tiny", "age+gender")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    save_checkpoint(folder / name, model, {"image_size": 64, "dataset": {"name": "demo", "synthetic": True}})
    return folder / f"{name}.json"


def test_nan_probabilities_are_a_sentence(tmp_path):
    predictor = Predictor(save_nan_checkpoint(tmp_path))
    try:
        with pytest.raises(AudienceError, match="gave no usable probabilities"):
            predictor.predict(np.full((64, 64, 3), 128, np.uint8), whole_image=True)
    finally:
        predictor.close()


# --- over raw HTTP, against a public deployment ----------------------------------------------------------


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_root):
    """A public server (0.0.0.0; promote and latency allowed as a Space owner may) that starts with a
    checkpoint of 100,000 nested brackets, one with a 5,000-digit number, and a run whose status.json is
    100,000 levels deep."""
    base = tmp_path_factory.mktemp("bounded-files")
    checkpoints, runs = base / "checkpoints", base / "runs"
    checkpoints.mkdir()
    (checkpoints / "deep.json").write_text(DEEP_LIST)
    (checkpoints / "long-number.json").write_text(LONG_NUMBER)
    deep = make_run(runs, "20200101-000000-tiny-folds-deepstatus", folds={0: (10, 12)})
    save_tiny_checkpoint(deep / "fold0", "best")
    (deep / "status.json").write_text(DEEP_OBJECT)
    bad_best = make_run(runs, "20200102-000000-tiny-folds-deepbest", folds={0: (10, 12)})
    (bad_best / "fold0").mkdir(exist_ok=True)
    (bad_best / "fold0" / "best.json").write_text(DEEP_LIST)
    (bad_best / "fold0" / "best.safetensors").write_bytes(b"")
    typed = make_run(runs, "20200103-000000-tiny-folds-listarch", folds={0: (10, 12)})
    (typed / "config.json").write_text(json.dumps({"arch": [], "image_size": {"a": 1}}))
    for name, (change, _) in OVERFLOWING.items():
        tiny_checkpoint(checkpoints, name, **change)
    save_nan_checkpoint(checkpoints)
    app = start_app_server(base, demo_root, extra_env={"GRADIO_SERVER_NAME": "0.0.0.0",
                                                       "AUDIENCE_ALLOW_TRAINING": "1"})
    request.addfinalizer(app.stop_soon)
    return app


def strict_outputs(stream: str) -> list:
    """The outputs of a finished raw call, parsed as a browser would: a bare NaN or Infinity is invalid JSON."""
    def refuse(constant):
        raise AssertionError(f"the event stream holds a bare {constant}: {stream[:300]}")

    sse_data(stream)  # a complete event with data
    line = [line for line in stream.splitlines() if line.startswith("data:")][-1]
    return json.loads(line[len("data:"):], parse_constant=refuse)


def problems_by_run(server) -> dict[str, str]:
    """The problems cells of /compare's runs table, and of its served-checkpoints table (as 'served:NAME')."""
    outputs = sse_data(call_raw(server, "compare", [[], None, "all folds", True]))
    table, served = outputs[1], outputs[-1]
    run, problems = table["headers"].index("run"), table["headers"].index("problems")
    rows = {row[run]: row[problems] for row in table["data"]}
    name, problem = served["headers"].index("checkpoint"), served["headers"].index("problem")
    return rows | {f"served:{row[name]}": row[problem] for row in served["data"]}


def test_the_app_starts_and_compare_lists_each_bad_file_as_a_problem(server):
    rows = problems_by_run(server)
    assert f"status.json: cannot be read ({DEEPER})" in rows["20200101-000000-tiny-folds-deepstatus"], rows
    assert "config.json: arch: input should be a valid string" in rows["20200103-000000-tiny-folds-listarch"], rows
    assert DEEPER in rows["checkpoint:deep"], rows
    assert "a number with too many digits" in rows["checkpoint:long-number"], rows
    assert "temperature.age" in rows["checkpoint:temperature-1e-300"], rows
    assert rows["checkpoint:e2e-tiny"] == "", rows  # the good ones stay good
    assert DEEPER in rows["served:deep"] and "too many digits" in rows["served:long-number"], rows
    assert rows["served:e2e-tiny"] == "", rows
    assert server.alive()


def test_promote_and_latency_answer_a_sentence_beside_bad_files(server):
    message = sse_data(call_raw(server, "promote", ["20200102-000000-tiny-folds-deepbest", "0", ""]))[0]
    assert message.startswith("**Not promoted:** ") and DEEPER in message, message
    before = set(server.checkpoints.iterdir())
    message = sse_data(call_raw(server, "promote", ["20200101-000000-tiny-folds-deepstatus", "0", "from-deep"]))[0]
    assert "is served as **from-deep**" in message, message  # a bad status.json does not hide the weights
    for path in set(server.checkpoints.iterdir()) - before:
        path.unlink()
    message = sse_data(call_raw(server, "measure_latency", [True]))[0]
    assert message.startswith("CPU latency"), message
    assert server.alive()


@pytest.mark.parametrize("model", ["deep.json", "long-number.json", *(f"{n}.json" for n in OVERFLOWING)])
def test_predict_names_the_bad_checkpoint(server, model):
    photo = upload(server, Image.new("RGB", (64, 64), (120, 100, 90)))
    status = strict_outputs(call_raw(server, "predict", [photo, model, True, False]))[-1]
    assert status.startswith(f"**Error:** Checkpoint metadata {server.checkpoints / model}"), status


def test_predict_with_nan_weights_answers_a_sentence_not_nan(server):
    photo = upload(server, Image.new("RGB", (64, 64), (120, 100, 90)))
    outputs = strict_outputs(call_raw(server, "predict", [photo, "nan-weights.json", True, False]))
    assert outputs[-1].startswith("**Error:** Model nan-weights.json gave no usable probabilities"), outputs[-1]
    assert outputs[3] is None  # no JSON of faces with null probabilities
    status = sse_data(call_raw(server, "predict", [photo, "e2e-tiny.json", True, False]))[-1]
    assert status.startswith("The whole image as one face"), status

