"""Every command of the README's "Command line" block, run as written on the demo data.

The block's lines are taken from README.md itself (continuation lines joined, comments dropped),
with the documented `.venv/bin/python` run as this interpreter, ROOT as the built-in demo dataset
and the other placeholders as temporary paths. Only flags that make a command quick are appended
(a tiny network, one epoch of two batches, one timed batch); a later flag overrides an earlier one,
so each command is otherwise the README's. A traceback or a non-zero exit fails the test.

The lines run one after another in one Python process (tests/fixtures/command_runner.py), each as its script's
`__main__` with the line's arguments, as the interpreter runs `python scripts/X.py ...`: a fresh interpreter per
line imported torch and the package again each time, half of the test's CPU time.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures.command_runner import CommandRunner
from PIL import Image

PROJECT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ".venv/bin/python"
SHIPPED = PROJECT / "checkpoints" / "utkface-mobilenetv3.json"

# Appended after the README's flags (argparse keeps the last value): speed only, same code paths.
QUICK = {
    ("train.py", "--data"): ["--arch", "tiny", "--folds", "0", "--epochs", "1", "--image-size", "32",
                             "--batch-size", "16", "--max-train-batches", "2", "--workers", "0"],
    ("train.py", "--preset"): ["--epochs", "1", "--max-train-batches", "2"],
    ("benchmark.py", "train"): ["--arch", "tiny", "--batches", "1", "--repeats", "1", "--workers", "0",
                                "--batch-size", "8", "--full-size", "64"],
    ("benchmark.py", "predict"): ["--repeat", "1", "--images", "{folder}"],
    ("benchmark.py", "accuracy"): ["--limit", "8"],
    ("benchmark.py", "exposure"): ["--limit", "8"],
    ("benchmark.py", "stability"): ["--limit", "2"],
    ("benchmark.py", "results"): ["--repeats", "2"],
}


def readme_commands() -> list[str]:
    """The lines of the bash block under "## Command line", continuation lines joined, comments dropped."""
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Command line"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line, comments=True) and " ".join(shlex.split(line, comments=True))
            for line in joined.splitlines() if line.strip()]


def test_the_readme_block_is_runnable_as_written():
    commands = readme_commands()
    assert len(commands) >= 10
    for command in commands:
        assert command.startswith(VENV_PYTHON + " scripts/"), command  # the documented venv prefix
        assert "[" not in command and "|" not in command, command  # no option syntax to type by hand


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("readme")
    checkpoint = tmp / "checkpoints" / "NAME.json"
    checkpoint.parent.mkdir()
    shutil.copy(SHIPPED, checkpoint)  # a copy: the commands never touch the repository's checkpoints/
    shutil.copy(SHIPPED.with_suffix(".safetensors"), checkpoint.with_suffix(".safetensors"))
    data = pytest.importorskip("skimage.data")
    photo = tmp / "photo.jpg"
    Image.fromarray(data.astronaut()).save(photo)
    (tmp / "folder").mkdir()
    Image.fromarray(data.astronaut()[20:340, 90:380]).save(tmp / "folder" / "head.png")
    return {"tmp": tmp, "checkpoint": checkpoint, "photo": photo}


def _substitute(command: str, places: dict, run_dir: Path | None) -> list[str]:
    tmp = places["tmp"]
    mapping = {"ROOT": "demo", "/tmp/demo": str(tmp / "demo"), "report.html": str(tmp / "report.html"),
               "labels.json": str(tmp / "labels.json"), "runs/": str(tmp / "runs"),
               "checkpoints/NAME.json": str(places["checkpoint"]), "photo.jpg": str(places["photo"]),
               "folder/": str(tmp / "folder"), "annotated/": str(tmp / "annotated"),
               "USER/NAME": "someone/audience-test", "DIR": str(tmp / "hub")}
    argv = []
    for token in shlex.split(command):
        if token.startswith("runs/<run-id>"):
            assert run_dir is not None, "a command uses runs/<run-id> before a training command made one"
            token = str(run_dir) + token.removeprefix("runs/<run-id>")
        argv.append(mapping.get(token, token))
    assert argv[0] == VENV_PYTHON
    script = Path(argv[1]).name
    key = (script, argv[2] if len(argv) > 2 else "")
    quick = [flag.replace("{folder}", str(tmp / "folder")) for flag in QUICK.get(key, [])]
    return [sys.executable, *argv[1:], *quick]


@pytest.mark.slow
def test_every_readme_command_runs_without_a_traceback(places):
    tmp = places["tmp"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AUDIENCE_HOME": str(tmp / "home"),
           "AUDIENCE_RUNS": str(tmp / "runs"), "AUDIENCE_CHECKPOINTS": str(tmp / "checkpoints"),
           "AUDIENCE_MODELS": str(tmp / "models"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    run_dir = None
    with CommandRunner(env, tmp / "outputs", PROJECT) as runner:
        for command in readme_commands():
            argv = _substitute(command, places, run_dir)
            done = runner.run(argv)
            print(f"{done.seconds:5.1f} s  {command}")
            run_dir = _check(command, argv, done, run_dir)
    assert np.asarray(Image.open(next((tmp / "annotated").iterdir()))).ndim == 3
    assert (tmp / "models" / "NAME.onnx").is_file()  # export_onnx.py writes into the models folder


def _check(command: str, argv: list[str], done: subprocess.CompletedProcess, run_dir: Path | None) -> Path | None:
    """The line's exit and output as the README promises them; the run folder a training line made, if any."""
    assert "Traceback" not in done.stderr + done.stdout, f"{command}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stderr[-3000:]}"
    if argv[1].endswith("train.py") and "--clear-cache" in argv:
        assert done.stdout.startswith("freed "), command
    elif argv[1].endswith("train.py"):
        last = done.stdout.strip().splitlines()[-1]
        assert last.startswith("run folder: "), command
        run_dir = Path(last.removeprefix("run folder: "))
    if argv[1].endswith("predict.py"):
        records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]  # JSON Lines
        assert len(records) == 2 and all("faces" in record for record in records)
    return run_dir
