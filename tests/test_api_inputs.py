"""Every API input is checked with the rules the command lines use (audience/inputs.py for typed paths and
names, TrainConfig for the numbers): a NUL byte, 5,000 characters, a 300-character name, a fold `abc`,
`image_size=1e6`, `epochs=1e18` or `1.5` each get one sentence, over the raw HTTP API and in the CLI, never
a bare error event or a traceback. Also the smaller leftovers of issue 11: a symlink loop says so, a fold
file splits lines at newlines only, the Predict status measures the decode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fixtures.app_server import PROJECT_ROOT, reset_served_checkpoints, save_tiny_checkpoint, shared_app_server
from fixtures.command_runner import CommandRunner
from fixtures.waiting import HANG_S
from PIL import Image
from test_bad_inputs import call_raw, sse_data
from test_compare import make_run

from audience.bench.model_latency import measure_cpu_latency
from audience.data.adience import read_fold_file
from audience.data.contained import is_symlink_loop
from audience.data.images import list_images, read_image
from audience.data.roots import resolve_data_root
from audience.errors import AudienceError
from audience.inputs import NAME_LIMIT, check_path, name_slug
from audience.train.config import TrainConfig
from audience.ui.uploads import REFUSED as UPLOAD_REFUSED

NUL = "a\0b"
LONG = "r" * 5000
CONTROL = "must not contain a control character such as a NUL byte"

# --- the rules themselves ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "sentence"), [
    (NUL, f"Data root {CONTROL}"),
    ("runs/x\ny", f"Data root {CONTROL}"),
    (LONG, "Data root is too long: at most 4,096 characters, got 5,000."),
    ("/tmp/" + "é" * 200, "Data root is too long: a file or folder name may have at most 255 bytes, one has 400"),
])
def test_typed_paths_that_no_path_function_takes_get_a_sentence(text, sentence):
    with pytest.raises(AudienceError) as refused:
        check_path(text, "Data root")
    assert str(refused.value).startswith(sentence), str(refused.value)


def test_typed_paths_that_are_fine_pass_unchanged():
    for text in ("demo", "~/data/adience", "/srv/données/été", "runs/20261130-101500-tiny-folds"):
        assert check_path(text, "Data root") == text


@pytest.mark.parametrize(("name", "slug"), [
    ("Modèle été", "Modèle-été"),
    ("年齢モデル", "年齢モデル"),
    ("मॉडल", "मॉडल"),  # marks (the vowel signs) stay: they are part of the word
    ("my run/2", "my-run-2"),
    ("a+b_c.v1", "a+b_c.v1"),
    ("e\u0301te\u0301", "\u00e9t\u00e9"),  # decomposed accents are composed (NFC)
])
def test_names_keep_letters_of_any_script(name, slug):
    assert name_slug(name, "run_name") == slug


@pytest.mark.parametrize(("name", "sentence"), [
    ("n" * 300, f"run_name is too long: at most {NAME_LIMIT} characters, got 300."),
    (NUL, f"run_name {CONTROL}"),
    ("!!! ///", "run_name '!!! ///' has no letter or digit to make a file name from."),
])
def test_names_that_cannot_name_a_file_are_refused(name, sentence):
    with pytest.raises(AudienceError) as refused:
        name_slug(name, "run_name")
    assert str(refused.value).startswith(sentence), str(refused.value)


NUMBER_FIELDS = [name for name, hint in TrainConfig.__annotations__.items()
                 if any(kind in str(hint) for kind in ("int", "float"))]


@pytest.mark.parametrize("name", NUMBER_FIELDS)
def test_every_number_setting_has_a_sane_upper_bound(name):
    """epochs=1e18 was accepted (an ETA of 10^15 hours); every number now has a range."""
    with pytest.raises(AudienceError, match=f"^{name} must be"):
        TrainConfig.from_dict({"data": "demo", name: 1e18})


def test_numbers_inside_the_ranges_pass():
    config = TrainConfig.from_dict({"data": "demo", "epochs": 10_000, "image_size": 1024, "seed": 2**32 - 1})
    assert (config.epochs, config.image_size, config.seed) == (10_000, 1024, 2**32 - 1)
    with pytest.raises(AudienceError, match="^epochs must be int; got 1.5"):
        TrainConfig.from_dict({"data": "demo", "epochs": 1.5})


def test_latency_refuses_a_run_config_size_with_the_config_rule():
    with pytest.raises(AudienceError, match="^image_size must be at least 8; got -5"):
        measure_cpu_latency("tiny", -5)


# --- the smaller leftovers -----------------------------------------------------------------------------


def test_a_symlink_loop_is_called_a_symlink_loop(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    assert is_symlink_loop(loop) and not is_symlink_loop(tmp_path / "absent.jpg")
    for read in (read_image, list_images):
        with pytest.raises(AudienceError, match="symlink loop"):
            read(loop)
    with pytest.raises(AudienceError, match="no such file"):
        read_image(tmp_path / "absent.jpg")
    root_loop = tmp_path / "root"
    root_loop.symlink_to(root_loop)
    with pytest.raises(AudienceError, match="data root not found: it is a symlink loop"):
        resolve_data_root(str(root_loop), allowed=[tmp_path])
    fold = tmp_path / "fold_0_data.txt"
    fold.symlink_to(fold)
    with pytest.raises(AudienceError, match="the fold file is a symlink loop"):
        read_fold_file(fold, 0)


def test_fold_file_lines_end_at_newlines_only(adience_meta, tmp_path):
    """str.splitlines() broke a line at a form feed or U+2028 inside a field: a false field count."""
    lines = (adience_meta / "fold_0_data.txt").read_text(encoding="utf-8-sig").split("\n")
    first = lines[1].split("\t")
    first[10] += "\u2028"  # fiducial_yaw_angle, a field the reader does not use
    first[11] += "\x0c"
    lines[1] = "\t".join(first)
    path = tmp_path / "fold_0_data.txt"
    path.write_text("\r\n".join(lines), encoding="utf-8")
    rows = read_fold_file(path, 0)
    assert len(rows) == len([line for line in lines[1:] if line.strip()])
    assert rows.iloc[0]["user_id"] == first[0]


def test_the_predict_status_measures_the_decode(monkeypatch):
    """The status said "decode 0 ms" for every photo: the handler decoded, then timed an array."""
    from audience.ui import predict as predict_tab
    from audience.ui.predict_view import NO_MODEL

    real = predict_tab.read_image

    def slow_read(source):
        time.sleep(0.08)
        return real(source)

    monkeypatch.setattr(predict_tab, "read_image", slow_read)
    image = np.full((64, 64, 3), 128, np.uint8)
    status = predict_tab.predict_image(image, NO_MODEL, whole_image=True)[-1]
    decode = int(status.split("(decode ")[1].split(",")[0])
    assert decode >= 80, status


# --- the raw HTTP API ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_root):
    return shared_app_server(request, tmp_path_factory, demo_root)


def call_named(server, api_name: str, **values) -> list:
    """A raw call naming the parameters it sets; the rest take the defaults the API states (/gradio_api/info)."""
    info = httpx.get(server.url + "gradio_api/info", timeout=HANG_S).json()["named_endpoints"]["/" + api_name]
    data = [values.pop(p["parameter_name"]) if p["parameter_name"] in values else p.get("parameter_default")
            for p in info["parameters"]]
    assert not values, f"/{api_name} has no parameter {sorted(values)}"
    return sse_data(call_raw(server, api_name, data))


def plain(markdown: str) -> str:
    return markdown.replace("\\", "")


def write_root_with_nul_user_id(root: Path, source: Path) -> Path:
    """`source`'s fold files (labels only) with a NUL byte in the first user_id of fold 0."""
    root.mkdir(exist_ok=True)
    for fold in range(5):
        text = (source / f"fold_{fold}_data.txt").read_text(encoding="utf-8-sig")
        if fold == 0:
            lines = text.split("\n")
            lines[1] = "ab\0c" + lines[1][lines[1].index("\t"):]
            text = "\n".join(lines)
        (root / f"fold_{fold}_data.txt").write_text(text, encoding="utf-8")
    return root


NUL_USER_ID = "line 2: user_id and original_image must be plain names, without '/', '\\', '..' or a NUL byte."


def test_api_text_inputs_get_one_sentence(server, demo_root):
    nul_user = write_root_with_nul_user_id(server.data_dirs / "nul-user-id", demo_root)
    eda = [(NUL, CONTROL), (LONG, "Data root is too long"), (str(nul_user), NUL_USER_ID)]
    for root, sentence in eda:
        summary = plain(call_named(server, "eda", root=root, images="none")[0])
        assert summary.startswith("**Could not load the data:**") and plain(sentence) in summary, summary
    train = [({"data": NUL}, f"data {CONTROL}"), ({"data": LONG}, "data is too long"),
             ({"data": "demo", "epochs": 1e18}, "epochs must be at most 10,000; got 1,000,000,000,000,000,000."),
             ({"data": "demo", "epochs": 1.5}, "epochs must be int; got 1.5."),
             ({"data": "demo", "image_size": 1e6}, "image_size must be at most 1,024; got 1,000,000."),
             ({"data": "demo", "run_name": "n" * 300}, f"run_name is too long: at most {NAME_LIMIT} characters")]
    for values, sentence in train:
        message = call_named(server, "train_start", arch="tiny", folds="0", **values)[0]
        assert message == f"**Not started:** {sentence}" or (message.startswith("**Not started:**")
                                                             and sentence in message), (values, message)
    for run_id, sentence in ((NUL, f"Run id {CONTROL}"), (LONG, "Run id is too long")):
        message = sse_data(call_raw(server, "train_resume", [run_id, "one GPU"]))[0]
        assert message.startswith(f"**Not started:** {sentence}"), message
        message = sse_data(call_raw(server, "promote", [run_id, "0", ""]))[0]
        assert message.startswith(f"**Not promoted:** {sentence}"), message
    photo = upload(server, Image.new("RGB", (64, 64), (120, 100, 90)))
    for model in (LONG, NUL):
        status = sse_data(call_raw(server, "predict", [photo, model, False, False]))[-1]
        assert status.startswith("**Error:** Model name "), status
    assert server.alive()


def upload(server, image: Image.Image, name: str = "face.png") -> dict:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    answer = httpx.post(server.url + "gradio_api/upload", files={"files": (name, buffer.getvalue(), "image/png")},
                        timeout=HANG_S)
    answer.raise_for_status()
    return {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}}


def test_promote_checks_fold_and_name_and_keeps_unicode_names(server):
    run = make_run(server.runs, "20200101-000000-tiny-folds-promote", folds={0: (10, 12)})
    save_tiny_checkpoint(run / "fold0", "best")
    before = set(server.models.iterdir()) | set(server.checkpoints.iterdir())
    try:
        for fold, name, sentence in (("abc", "", "Fold 'abc' is not a fold: choose 'all folds' or a fold number"),
                                     ("7", "", "Fold '7' is not a fold"),
                                     ("0", "n" * 300, f"The checkpoint name is too long: at most {NAME_LIMIT}"),
                                     ("0", "a\0b", f"The checkpoint name {CONTROL}"),
                                     ("0", "hub--x--y--model", "The checkpoint name hub--x--y--model starts with "
                                                               "'hub--', which names models served from the Hugging "
                                                               "Face Hub; choose a name that does not."),
                                     ("0", "ＨＵＢ--x", "starts with 'hub--'"),
                                     ("0", "E2E-tiny", "The checkpoint name E2E-tiny looks like the served model "
                                                       "e2e-tiny (the same letters once width, case and look-alike "
                                                       "letters are ignored); choose a clearly different name."),
                                     ("0", "е2е-tiny", "looks like the served model e2e-tiny"),  # Cyrillic е
                                     ("0", "e2e-ｔｉｎｙ", "looks like the served model e2e-tiny")):
            message = sse_data(call_raw(server, "promote", [run.name, fold, name]))[0]
            assert message.startswith(f"**Not promoted:** {sentence}") or (
                message.startswith("**Not promoted:**") and sentence in message), message
        assert set(server.models.iterdir()) | set(server.checkpoints.iterdir()) == before
        message = sse_data(call_raw(server, "promote", [run.name, "0", "Modèle été 年齢"]))[0]
        assert "is served as **Modèle-été-年齢**" in message, message
        assert (server.models / "Modèle-été-年齢.json").is_file()  # the user's models folder, not checkpoints/
        for name in ("modèle-été-年齢", "Modèle-ÉTÉ-年齢"):  # case-only twins of the new one are refused too
            message = sse_data(call_raw(server, "promote", [run.name, "0", name]))[0]
            assert "looks like the served model Modèle-été-年齢" in message, message
    finally:
        reset_served_checkpoints(server)
        shutil.rmtree(run)


def test_measure_latency_names_a_run_config_with_a_bad_size(server):
    run = make_run(server.runs, "20200101-000000-tiny-folds-negative", folds={0: (10, 12)})
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "image_size": -5}))
    try:
        message = sse_data(call_raw(server, "measure_latency", [True]))[0]
        assert "tiny at -5px: image_size must be at least 8; got -5." in message, message
    finally:
        shutil.rmtree(run)


def test_predict_refuses_proc_self_environ_like_any_outside_path(server):
    """It was reported as "empty (0 bytes)", which told that the file exists."""
    for payload in ({"path": "/proc/self/environ"}, "/proc/self/environ",
                    {"path": "/proc/self/environ", "meta": {"_type": "gradio.FileData"}}):
        stream = call_raw(server, "predict", [payload, "e2e-tiny.json", False, False])
        assert "0 bytes" not in stream and "environ" not in stream, stream
        if stream.startswith("event: complete"):
            assert sse_data(stream)[-1] == f"**Error:** {UPLOAD_REFUSED}"
        else:
            assert stream.startswith("event: error"), stream


BAD_SERVED = {  # field: value, what the sentence names
    "temperature": ("hot", "temperature: input should be a valid dictionary"),
    "image_size": ("abc", "image_size: input should be a valid integer"),
    "weights": (5, "weights: input should be a valid dictionary"),
    "mean": ([0.5, 0.5, 0.5, 0.5, 0.5], "mean: list should have at most 3 items"),
}


def test_predict_and_compare_answer_malformed_served_checkpoints(server):
    """A served checkpoint JSON with a wrong field: /predict names the file and field; /compare lists it in
    the problems column and keeps every other row, also beside a run whose cv_summary.json is bad."""
    good = json.loads((server.checkpoints / "e2e-tiny.json").read_text())
    written = []
    run = make_run(server.runs, "20200101-000000-tiny-folds-badsummary", folds={0: (10, 12)})
    (run / "cv_summary.json").write_text(json.dumps({"age_exact": {"mean": "x"}}))
    photo = upload(server, Image.new("RGB", (64, 64), (120, 100, 90)))
    try:
        cases = {**{f"bad-{field}": {field: value} for field, (value, _) in BAD_SERVED.items()},
                 "bad-negative-temperature": {"temperature": {"age": -1.0, "gender": 1.0}}}
        for name, change in cases.items():
            path = server.checkpoints / f"{name}.json"
            path.write_text(json.dumps({**good, **change}))
            written.append(path)
        sentences = {**{f"bad-{field}": text for field, (_, text) in BAD_SERVED.items()},
                     "bad-negative-temperature": "temperature.age"}
        for name, sentence in sentences.items():
            status = sse_data(call_raw(server, "predict", [photo, f"{name}.json", False, True]))[-1]
            path = server.checkpoints / f"{name}.json"
            assert status.startswith(f"**Error:** Checkpoint metadata {path}: ") and sentence in status, status
        outputs = sse_data(call_raw(server, "compare", [[], None, "all folds", True]))
        table = outputs[1]
        rows = {row[table["headers"].index("run")]: row[table["headers"].index("problems")] for row in table["data"]}
        assert any(run_id.endswith("e2e-tiny") for run_id in rows), rows
        for name in sentences:
            assert any(run_id.endswith(name) and "Checkpoint metadata" in problem
                       for run_id, problem in rows.items()), rows
        assert "cv_summary.json" in rows[run.name], rows
        status = sse_data(call_raw(server, "predict", [photo, "e2e-tiny.json", False, False]))[-1]
        assert "face" in status and not status.startswith("**Error"), status
    finally:
        for path in written:
            path.unlink()
        shutil.rmtree(run)


# --- the command lines ---------------------------------------------------------------------------------


def run_cli(script: str, *args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PROJECT_ROOT / "scripts" / script), *map(str, args)],
                            cwd=PROJECT_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=300)
    return process.returncode, err


SCRIPTS = PROJECT_ROOT / "scripts"


def cli_runner(tmp_path: Path, env: dict | None = None) -> CommandRunner:
    """Command lines run in one process, each as `python scripts/X.py ...` (tests/fixtures/command_runner.py)."""
    return CommandRunner({**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, tmp_path / "cli-outputs", PROJECT_ROOT)


@pytest.mark.slow
def test_train_cli_applies_the_same_rules(tmp_path):
    env = {"AUDIENCE_HOME": str(tmp_path / "home"), "AUDIENCE_RUNS": str(tmp_path / "runs")}
    cases = {
        ("--epochs", "1.5"): "error: epochs must be int; got 1.5.",
        ("--image-size", "1000000"): "error: image_size must be at most 1,024; got 1,000,000.",
        ("--run-name", "n" * 300): f"error: run_name is too long: at most {NAME_LIMIT} characters",
    }
    with cli_runner(tmp_path, env) as runner:  # one process for the four lines: each paid torch's import
        for args, sentence in cases.items():
            done = runner.run([sys.executable, SCRIPTS / "train.py", "--data", "demo", "--arch", "tiny", *args])
            code, err = done.returncode, done.stderr
            assert code == 2 and err.strip().startswith(sentence) and "Traceback" not in err, (args, err)
        done = runner.run([sys.executable, SCRIPTS / "train.py", "--resume", "r" * 5000])
    code, err = done.returncode, done.stderr
    assert code == 2 and err.startswith("error: The run folder is too long") and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_predict_cli_out_that_cannot_be_a_folder_is_refused(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "checkpoints")
    photo = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (120, 100, 90)).save(photo)
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n")
    outs = {"/dev/full": "The output folder /dev/full is an existing file, not a folder",
            existing: f"The output folder {existing} is an existing file, not a folder",
            existing / "sub": f"Cannot create the output folder {existing / 'sub'} for the annotated images "
                              "(a part of the path is a file)"}
    with cli_runner(tmp_path) as runner:  # one process for the three lines: each paid torch's import
        for out, sentence in outs.items():
            done = runner.run([sys.executable, SCRIPTS / "predict.py", photo, "--checkpoint", checkpoint, "--out", out])
            code, err = done.returncode, done.stderr
            assert code == 2 and f"error: {sentence}" in err and "Traceback" not in err, (out, err)
    assert existing.read_text() == "keep me\n"


def test_eda_cli_names_a_nul_byte_in_a_user_id(demo_root, tmp_path):
    write_root_with_nul_user_id(tmp_path, demo_root)
    before = (tmp_path / "fold_0_data.txt").read_bytes()
    code, err = finished(run_cli("eda.py", "--data", tmp_path, "--images", "none", "--json"))
    assert code == 2 and "Traceback" not in err, err
    assert err.strip() == f"error: {tmp_path / 'fold_0_data.txt'} {NUL_USER_ID}", err
    assert (tmp_path / "fold_0_data.txt").read_bytes() == before


def test_a_unicode_run_name_names_the_run_folder(tmp_path):
    """Run names were cut to ASCII ('été 年齢' left nothing): the folder keeps them as typed."""
    from audience.train.runs import create_run_dir

    config = TrainConfig.from_dict({"data": "demo", "arch": "tiny", "run_name": "été 年齢"})
    assert create_run_dir(tmp_path, config).name.endswith("-tiny-folds-été-年齢")
