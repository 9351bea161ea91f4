"""The train / evaluate / benchmark command lines: end to end, Ctrl-C, and one-sentence errors."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.waiting import HANG_S, wait_until

from audience.cli import benchmark as benchmark_cli
from audience.cli import evaluate as evaluate_cli
from audience.cli import train as train_cli

PROJECT = Path(__file__).resolve().parent.parent


def quick_flags(root, tmp_path) -> list[str]:
    return ["--data", str(root), "--arch", "tiny", "--folds", "0", "--epochs", "1", "--batch-size", "16",
            "--image-size", "32", "--max-train-batches", "2", "--out", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache")]


def _environment(tmp_path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "AUDIENCE_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def cli_run(small_root, tmp_path_factory):
    """`python scripts/train.py ...` as a user runs it."""
    tmp = tmp_path_factory.mktemp("cli")
    done = subprocess.run([sys.executable, "scripts/train.py", *quick_flags(small_root, tmp)], cwd=PROJECT,
                          capture_output=True, text=True, env=_environment(tmp), timeout=300)
    return done, tmp


@pytest.mark.slow
def test_train_cli_runs_end_to_end_and_prints_the_run_folder(cli_run):
    done, tmp = cli_run
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("run folder: ")
    run_dir = Path(last.removeprefix("run folder: "))
    assert run_dir.parent == tmp / "runs" and (run_dir / "fold0" / "best.safetensors").is_file()
    assert "fold 0 epoch 1/1: loss" in done.stdout and "finished" in done.stdout
    assert "Traceback" not in done.stderr
    assert (run_dir / "train.log").read_text().splitlines()[0] in done.stdout


@pytest.fixture(scope="module")
def quick_run(small_root, tmp_path_factory) -> tuple[Path, Path]:
    """The same run made in this process (`train.main`): a subprocess would import torch once more."""
    tmp = tmp_path_factory.mktemp("quick")
    assert train_cli.main([*quick_flags(small_root, tmp), "--quiet"]) == 0
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir, tmp


def test_evaluate_cli_reproduces_the_test_metrics(quick_run, small_root, capsys, monkeypatch):
    run_dir, tmp = quick_run
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp / "home"))
    assert evaluate_cli.main([str(run_dir / "fold0" / "best.safetensors"), "--data", str(small_root), "--fold", "0",
                              "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "fold0" / "test_metrics.json").read_text())
    assert result["n"] == saved["sizes"]["test"] and result["warnings"] == []
    for key in ("age_exact", "age_one_off", "gender_acc", "gender_acc_fm", "age_ece"):
        assert result["metrics"][key] == pytest.approx(saved["metrics"][key], abs=1e-9), key
    assert evaluate_cli.main([str(run_dir / "fold0" / "best.json"), "--data", str(small_root), "--fold", "1"]) == 0
    report = capsys.readouterr().out
    assert "age: exact" in report and "fold 1 was training data" in report


@pytest.mark.parametrize(("argv", "message"), [
    (["--data", "/no/such/root"], "data root not found"),
    (["--data", "demo", "--epochs", "zero"], "epochs must be int"),
    (["--data", "demo", "--folds", "9"], "folds must be"),
    (["--data", "demo", "--arch", "vgg16"], "arch must be one of"),
    (["--resume", "/no/such/run"], "not a run folder"),
])
def test_train_cli_errors_are_one_sentence(argv, message, capsys):
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_train_cli_rejects_bad_flags_the_argparse_way(capsys):
    for argv in (["--data", "demo", "--no-such-flag"], ["--resume", "x", "--epochs", "3"], ["--epochs", "3"]):
        with pytest.raises(SystemExit) as exit_info:
            train_cli.main(argv)
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_a_fold_without_labels_is_a_sentence(small_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(small_root, root)
    lines = (root / "fold_2_data.txt").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    for row in rows:
        row[3] = "None"
    (root / "fold_2_data.txt").write_text("\n".join([lines[0], *("\t".join(r) for r in rows)]) + "\n")
    assert train_cli.main([*quick_flags(root, tmp_path), "--task", "age", "--folds", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: Fold 2 has no face labelled for task age, so it cannot be tested."
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _raise_a_bug(run_dir: Path | None):
    """A stand-in for cross_validate that fails like a bug would (after making its run folder, when given)."""

    def cross_validate(config, on_event=None, stop=None, resume=None):
        if run_dir is not None:
            run_dir.mkdir(parents=True)
            (run_dir / "train.log").write_text("internal error:\nTraceback (most recent call last): ...\n")
            on_event({"type": "run_start", "run_dir": str(run_dir), "message": "starting run"})
        raise RuntimeError("a\nbug")  # a two-line message still gives one line

    return cross_validate


@pytest.mark.parametrize("has_run_folder", [True, False])
def test_an_internal_error_is_one_line_and_exit_1(has_run_folder, tmp_path, capsys, monkeypatch):
    import audience.train.cross_validate

    run_dir = tmp_path / "runs" / "20260101-000000-tiny-folds" if has_run_folder else None
    monkeypatch.setattr(audience.train.cross_validate, "cross_validate", _raise_a_bug(run_dir))
    monkeypatch.delenv("AUDIENCE_DEBUG", raising=False)
    assert train_cli.main(["--data", "demo", "--arch", "tiny", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: internal error (RuntimeError: a bug); ")
    if has_run_folder:
        assert err[0].endswith(f"details in {run_dir / 'train.log'}")
    else:
        assert err[0].endswith("run again with --debug to see the traceback")


def test_debug_prints_the_traceback_of_an_internal_error(capsys, monkeypatch):
    import audience.train.cross_validate

    monkeypatch.setattr(audience.train.cross_validate, "cross_validate", _raise_a_bug(None))
    assert train_cli.main(["--data", "demo", "--arch", "tiny", "--quiet", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("error: internal error (RuntimeError: a bug)")


def test_evaluate_cli_internal_error_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    import audience.train.evaluation

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(audience.train.evaluation, "evaluate_checkpoint", broken)
    monkeypatch.setenv("AUDIENCE_DEBUG", "0")
    assert evaluate_cli.main(["x.safetensors", "--data", "demo", "--fold", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: internal error (ZeroDivisionError: division by zero); run again with --debug to see the "
                   "traceback"]
    monkeypatch.setenv("AUDIENCE_DEBUG", "1")
    assert evaluate_cli.main(["x.safetensors", "--data", "demo", "--fold", "0"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_evaluate_cli_errors_are_one_sentence(small_root, tmp_path, capsys):
    assert evaluate_cli.main([str(tmp_path / "none.safetensors"), "--data", str(small_root), "--fold", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Checkpoint metadata") and "does not exist" in err


@pytest.mark.slow
def test_ctrl_c_stops_after_the_batch_and_says_how_to_resume(small_root, tmp_path):
    flags = quick_flags(small_root, tmp_path)
    flags[flags.index("--epochs") + 1] = "50"
    flags[flags.index("--max-train-batches") + 1] = "1000"
    # Its own process group, so that the signal reaches the loader workers too, as a terminal's Ctrl-C does.
    process = subprocess.Popen([sys.executable, "scripts/train.py", *flags, "--workers", "1"], cwd=PROJECT,
                               env=_environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    logs = wait_until(lambda: list((tmp_path / "runs").glob("*/fold0/metrics.csv")), "an epoch of the run is written")
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=HANG_S)
    assert process.returncode == 130, err
    assert "stopping after the current batch" in err and "Traceback" not in err
    assert "--resume" in out and out.strip().splitlines()[-1].startswith("run folder: ")
    run_dir = logs[0].parent.parent
    assert json.loads((run_dir / "status.json").read_text())["state"] == "stopped"
    # the hint repeats the command as it was run (this interpreter, the script as given), not a fixed one
    hint = shlex.join([sys.executable, "scripts/train.py", "--resume", str(run_dir)])
    assert f"continue with: {hint}" in out, out


@pytest.mark.slow
def test_ctrl_c_mid_epoch_then_resume_ends_like_an_uninterrupted_run(small_root, tmp_path):
    """SIGINT in the middle of an epoch, then `--resume`: the same per-epoch metrics, test metrics and best
    weights as the same run never interrupted (kill -9 is covered in test_train.py). One persistent loader
    worker, as in test_train.py's stop-and-resume test: the path where resuming must not disturb the
    random streams."""
    import numpy as np
    import pandas as pd
    from safetensors.numpy import load_file

    def flags(name: str) -> list[str]:
        out = quick_flags(small_root, tmp_path)
        out[out.index("--epochs") + 1] = "3"
        out[out.index("--max-train-batches") + 1] = "1000"  # every batch
        return [*out, "--workers", "1", "--run-name", name, "--quiet"]

    env = _environment(tmp_path)
    straight = subprocess.run([sys.executable, "scripts/train.py", *flags("straight")], cwd=PROJECT, env=env,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    straight_dir = Path(straight.stdout.strip().splitlines()[-1].removeprefix("run folder: "))

    process = subprocess.Popen([sys.executable, "scripts/train.py", *flags("interrupted")], cwd=PROJECT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    give_up = time.monotonic() + HANG_S
    metrics = None
    while time.monotonic() < give_up and process.poll() is None:
        metrics = next((tmp_path / "runs").glob("*-interrupted/fold0/metrics.csv"), None)
        if metrics is not None and len(metrics.read_text().splitlines()) >= 2:  # epoch 1 done: now in epoch 2
            break
        time.sleep(0.05)
    assert metrics is not None and process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    run_dir = metrics.parent.parent
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "stopped", status
    epochs_done = len(metrics.read_text().splitlines()) - 1
    assert 1 <= epochs_done < 3

    resumed = subprocess.run([sys.executable, "scripts/train.py", "--resume", str(run_dir), "--quiet"], cwd=PROJECT,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    ours, theirs = (pd.read_csv(run / "fold0" / "metrics.csv") for run in (run_dir, straight_dir))
    columns = ["epoch", "train_loss", "val_loss", "val_age_exact", "val_gender_acc", "lr"]  # not the timings
    assert len(ours) == len(theirs) == 3
    assert np.allclose(ours[columns].to_numpy(), theirs[columns].to_numpy(), atol=1e-6, rtol=0), (ours, theirs)
    ours, theirs = (json.loads((run / "fold0" / "test_metrics.json").read_text()) for run in (run_dir, straight_dir))
    assert ours["metrics"].keys() == theirs["metrics"].keys()
    for key, value in theirs["metrics"].items():
        assert np.allclose(ours["metrics"][key], value, atol=1e-6, rtol=0), key
    ours, theirs = (load_file(run / "fold0" / "best.safetensors") for run in (run_dir, straight_dir))
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


def test_benchmark_cli_ends_with_a_json_line(small_root, capsys):
    code = benchmark_cli.main(["train", "--data", str(small_root), "--arch", "tiny", "--batches", "1",
                               "--batch-size", "4", "--image-size", "32", "--full-size", "192", "--workers", "1",
                               "--repeats", "1"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert {"loader_ratio", "step_ratio", "arch", "device", "batch_size", "cores"} <= set(report)
    assert report["loader_ratio"] > 0 and set(report["variants"]) == {"given", "full_size"}
    for variant in report["variants"].values():
        assert variant["loader_images_per_s"] > 0 and variant["naive_step_images_per_s"] > 0
    assert any("loader:" in line for line in lines[:-1])


def test_preset_demo_is_the_demo_recipe_and_explicit_flags_override_it(capsys):
    from audience.train.config import DEMO_RECIPE

    parser = train_cli.build_parser()
    recipe = train_cli.config_of(parser.parse_args(["--preset", "demo"]))
    assert all(str(recipe.to_dict()[name]) == str(value) for name, value in DEMO_RECIPE.items())
    assert recipe.arch == "tiny" and recipe.epochs == DEMO_RECIPE["epochs"] and recipe.lr == DEMO_RECIPE["lr"]
    mixed = train_cli.config_of(parser.parse_args(["--preset", "demo", "--epochs", "3", "--image-size", "32"]))
    assert (mixed.epochs, mixed.image_size, mixed.arch, mixed.batch_size) == (3, 32, "tiny", DEMO_RECIPE["batch_size"])
    plain = train_cli.config_of(parser.parse_args(["--data", "demo"]))
    assert plain.epochs != DEMO_RECIPE["epochs"] or plain.arch != "tiny"  # no preset: the CLI's own defaults
    with pytest.raises(SystemExit):
        train_cli.main(["--resume", "x", "--preset", "demo"])
    assert "drop --preset" in capsys.readouterr().err


def test_the_command_record_and_the_resume_hint_name_how_the_command_was_started(capsys):
    """command.txt and the resume hint give a command that runs: the module form, or the wrapper as typed."""
    from audience.train.cross_validate import resume_command

    assert train_cli.command_line(["--data", "demo"]) == "python -m audience.cli.train --data demo"
    assert train_cli.command_line(["--data", "demo"], "scripts/train.py") == "python scripts/train.py --data demo"
    hint = f"continue with: {resume_command(Path('runs/r1'))}"
    assert hint == "continue with: python -m audience.cli.train --resume runs/r1"
    for program, shown in ((train_cli.MODULE, "python -m audience.cli.train"), ("scripts/train.py",
                                                                             "python scripts/train.py")):
        train_cli._Progress(quiet=True, program=program)({"type": "stopped", "message": hint})
        assert capsys.readouterr().out.strip() == f"continue with: {shown} --resume runs/r1"
    for command in ([sys.executable, "-m", "audience.cli.train", "--help"], [sys.executable, "scripts/train.py",
                                                                          "--help"]):
        done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "--epochs EPOCHS" in done.stdout and "1 to 10,000" in done.stdout
