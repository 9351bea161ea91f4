"""Hub checkpoints (served from the Hugging Face cache, fast and clear offline) and the publishing dry run."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.checkpoints import save_tiny_checkpoint
from fixtures.waiting import HANG_S
from huggingface_hub import constants as hub_constants

from audience.errors import AudienceError
from audience.model import hub_access as hub_net
from audience.model import served as hub
from audience.model.checkpoint import load_checkpoint
from audience.model.metadata import CheckpointMetadata, check_checkpoint_metadata
from audience.publish.model_card import LEAK_WARNING, SYNTHETIC_WARNING, build_model_card

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
METADATA = {
    "image_size": 64, "dataset": {"name": "adience", "synthetic": False, "policy": "bins", "images": "aligned"},
    "protocol": "folds", "fold": 2, "metrics_on": "test", "flops": 18_272_256,
    "metrics": {"age_exact": 0.512, "age_one_off": 0.873, "gender_acc": 0.861, "gender_acc_fm": 0.884},
    "temperature": {"age": 1.3, "gender": 1.1},
    "calibration": {"age": {"temperature": 1.3, "test_ece_before": 0.12, "test_ece_after": 0.04}},
}


def typed_metadata(**overrides) -> CheckpointMetadata:
    """METADATA with the keys every checkpoint has, as a reader gets it."""
    required = {"format_version": 1, "arch": "tiny", "task": "age+gender", "mean": [0.5] * 3, "std": [0.25] * 3}
    return check_checkpoint_metadata({**required, **METADATA, **overrides}, "test.json")


def make_checkpoint(stem: Path, **overrides) -> Path:
    return save_tiny_checkpoint(stem.parent, stem.name, {**METADATA, **overrides})


def fill_hub_cache(cache: Path, repo_id: str, source_json: Path, filename: str = "model.json") -> Path:
    """The Hugging Face cache layout (refs/main -> snapshots/<commit>/files) that hf_hub_download reads offline."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    stem = filename.removesuffix(".json")
    (snapshot / filename).write_bytes(source_json.read_bytes())
    (snapshot / f"{stem}.safetensors").write_bytes(source_json.with_suffix(".safetensors").read_bytes())
    return snapshot / filename


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An empty HF cache and checkpoints folder in tmp, offline, and a fresh served-model memo."""
    cache, local = tmp_path / "hf-cache", tmp_path / "checkpoints"
    cache.mkdir()
    local.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(local))
    for name in (hub.ENV_REPO, hub.ENV_FILE, hub.ENV_REVISION):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "_served", hub._Served())
    return cache, local


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed once the socket is: a connect is refused at once


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({hub.ENV_REPO: "me/ages"}, hub.HubModel("me/ages", "model.json", None)),
    ({hub.ENV_REPO: "me/ages", hub.ENV_FILE: "fold0/best", hub.ENV_REVISION: "v1"},
     hub.HubModel("me/ages", "fold0/best.json", "v1")),
])
def test_configured_hub_model_reads_the_environment(monkeypatch, env, expected):
    for name in (hub.ENV_REPO, hub.ENV_FILE, hub.ENV_REVISION):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hub.configured_hub_model() == expected
    if expected is not None:
        assert "/" not in expected.value and expected.value.startswith(hub.VALUE_PREFIX)


@pytest.mark.parametrize(("name", "value", "message"), [
    (hub.ENV_REPO, "not a repo id!", "is not a Hub repo id"),
    (hub.ENV_FILE, "../../etc/passwd.json", "must be a file path inside the repo"),
])
def test_malformed_settings_are_one_sentence(monkeypatch, name, value, message):
    monkeypatch.setenv(hub.ENV_REPO, "me/ages")
    monkeypatch.setenv(name, value)
    with pytest.raises(AudienceError, match=message):
        hub.configured_hub_model()


def test_served_from_the_cache_offline_and_listed_first(hub_env, tmp_path, monkeypatch):
    cache, local = hub_env
    source = make_checkpoint(tmp_path / "src" / "best")
    cached = fill_hub_cache(cache, "me/ages", source)
    local_json = make_checkpoint(local / "local-model")
    monkeypatch.setenv(hub.ENV_REPO, "me/ages")

    paths, note = hub.resolve_served_checkpoints()

    assert note is None
    assert paths == [cached, local_json]
    value = hub.served_name(cached)
    assert value == "hub--me--ages--model.json" and hub.served_name(local_json) == "local-model.json"
    assert hub.find_hub_checkpoint(value) == cached
    assert hub.find_hub_checkpoint("local-model.json") is None  # a local name is predict_view's business
    model, _, metadata = load_checkpoint(cached)
    assert metadata.fold == 2 and not model.training


def test_download_happens_once_per_process(hub_env, tmp_path, monkeypatch):
    cache, _ = hub_env
    fill_hub_cache(cache, "me/ages", make_checkpoint(tmp_path / "src" / "best"))
    monkeypatch.setenv(hub.ENV_REPO, "me/ages")
    calls = []
    real = hub.download_checkpoint
    monkeypatch.setattr(hub, "download_checkpoint", lambda model: calls.append(model) or real(model))
    first = hub.resolve_served_checkpoints()
    second = hub.resolve_served_checkpoints()
    assert first == second and len(first[0]) == 1
    assert len(calls) == 1


def test_offline_and_not_cached_is_a_fast_note_and_detection_only(hub_env, monkeypatch, connections):
    monkeypatch.setenv(hub.ENV_REPO, "me/absent")
    paths, note = hub.resolve_served_checkpoints()
    assert connections == []  # fast: nothing is asked of the network (a 2 s wall-clock bound failed under load)
    assert paths == []
    assert note == ("Model me/absent/model.json cannot be loaded: HF_HUB_OFFLINE is set and it is not in the "
                    "local Hugging Face cache.")
    with pytest.raises(AudienceError, match="HF_HUB_OFFLINE is set"):
        hub.find_hub_checkpoint("hub--me--absent--model.json")


def test_unreachable_hub_without_offline_flag_is_bounded(hub_env, tmp_path, monkeypatch, connections):
    _, local = hub_env
    local_json = make_checkpoint(local / "kept")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")  # refused at once, never the Internet
    monkeypatch.setenv(hub.ENV_REPO, "me/absent")
    paths, note = hub.resolve_served_checkpoints()
    # Bounded: one probe of the endpoint, with the probe's timeout, then the cache (no retries, no download)
    assert connections == [(("127.0.0.1", port), hub.PROBE_TIMEOUT_S)]
    assert paths == [local_json]  # the local checkpoints are still served
    assert "the Hugging Face Hub cannot be reached and it is not in the local cache" in note


def test_damaged_hub_checkpoint_is_refused_with_a_note(hub_env, tmp_path, monkeypatch):
    cache, _ = hub_env
    cached = fill_hub_cache(cache, "me/ages", make_checkpoint(tmp_path / "src" / "best"))
    weights = cached.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setenv(hub.ENV_REPO, "me/ages")
    paths, note = hub.resolve_served_checkpoints()
    assert paths == []
    assert note.startswith("Model me/ages/model.json is not a usable checkpoint:") and "sha256" in note


def test_unknown_hub_value_is_refused(hub_env, monkeypatch):
    monkeypatch.setenv(hub.ENV_REPO, "me/ages")
    with pytest.raises(AudienceError, match="is not served here"):
        hub.find_hub_checkpoint("hub--someone--else--model.json")


# --- model card and publishing -------------------------------------------------------------------


def test_card_of_a_leaky_synthetic_model_warns_first(tmp_path):
    card = build_model_card(typed_metadata(protocol="random", dataset={"name": "audience-demo", "synthetic": True}),
                            None, "me/ages")
    body = card.split("---\n", 2)[2]
    assert LEAK_WARNING in body and SYNTHETIC_WARNING in body
    assert body.index(LEAK_WARNING) < body.index("## Data")  # on top, before any number
    assert "not comparable with the Adience literature" in card
    assert "synthetic-data" in card.split("---\n", 2)[1]


def test_card_of_an_honest_real_model_has_no_warning_and_the_per_fold_table(tmp_path):
    run = tmp_path / "runs" / "20261126-101500-tiny-folds"
    best = make_checkpoint(run / "fold2" / "best")
    summary = {"run_id": run.name, "protocol": "folds",
               "age_exact": {"mean": 0.5, "std": 0.02, "per_fold": {"0": 0.48, "2": 0.52}},
               "gender_acc": {"mean": 0.86, "std": 0.01, "per_fold": {"0": 0.85, "2": 0.87}}}
    (run / "cv_summary.json").write_text(json.dumps(summary))
    from audience.publish.model_card import find_run_summary

    found = find_run_summary(best, typed_metadata())
    card = build_model_card(typed_metadata(), found, "me/ages")
    assert found == summary
    assert "LEAK WARNING" not in card and "Synthetic demo data" not in card
    assert "| age exact accuracy | 48.0% | 52.0% | 50.0% ± 2.0% |" in card
    assert "| age exact accuracy | 51.2% |" in card  # this checkpoint's own test metrics
    assert "| age | 1.300 | 0.120 | 0.040 |" in card  # calibration
    assert "FLOPs per face: 0.018 G" in card and "parameters:" in card
    assert "## Intended use and limits" in card and "Not for decisions about people" in card


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "push_to_hub.py"), *args],
                          capture_output=True, text=True, timeout=HANG_S, env={**os.environ, **(env or {})},
                          cwd=PROJECT_ROOT)


def load_script(name: str):
    return importlib.import_module(f"audience.cli.{name}")


def test_push_dry_run_writes_a_loadable_repo_and_refuses_damage(tmp_path, capsys):
    push = load_script("push_to_hub")
    best = make_checkpoint(tmp_path / "run" / "fold0" / "best", protocol="random", leaky=True,
                           train_config={"data": "/home/alice/datasets/adience", "out": "/home/alice/runs",
                                         "cache_dir": None, "arch": "tiny"})
    out = tmp_path / "to-publish"
    assert push.main([str(best), "--repo", "me/ages", "--dry-run", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.json", "model.safetensors"]
    assert LEAK_WARNING in (out / "README.md").read_text()
    _, _, metadata = load_checkpoint(out / "model.json")  # the sha256 still matches the copied weights
    assert metadata.weights.file == "model.safetensors"
    # the training machine's folders are not published, only their names
    assert metadata.train_config.as_dict() == {"data": "adience", "out": "runs", "cache_dir": None, "arch": "tiny"}
    assert "/home/alice" not in (out / "model.json").read_text() + (out / "README.md").read_text()

    capsys.readouterr()
    assert push.main([str(best), "--repo", "me/ages"]) == 2  # the tests run with HF_HUB_OFFLINE=1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: HF_HUB_OFFLINE is set: unset it to publish, or use --dry-run OUTDIR to write the files."]

    assert push.main([str(best), "--repo", "not a repo", "--dry-run", str(out)]) == 2
    assert "is not a Hub repo id" in capsys.readouterr().err

    damaged = best.with_suffix(".safetensors")
    damaged.write_bytes(damaged.read_bytes()[:-10])
    assert push.main([str(best), "--repo", "me/ages", "--dry-run", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "truncated" in err
    assert not (tmp_path / "other" / "model.safetensors").exists()


@pytest.mark.slow
def test_push_without_a_token_is_one_sentence(tmp_path):
    best = make_checkpoint(tmp_path / "best")
    done = run_script(str(best), "--repo", "me/ages",
                      env={"HF_HUB_OFFLINE": "", "HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf-home")})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: No Hugging Face token: run `hf auth login` or set HF_TOKEN (a write token) to publish."]


def test_hub_probe_tells_a_listening_endpoint_from_a_closed_or_malformed_one(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub_net.hub_reachable(timeout=1.0)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert not hub_net.hub_reachable(timeout=1.0)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:not-a-port")
    assert not hub_net.hub_reachable(timeout=1.0)


def test_card_says_uncalibrated_when_temperature_scaling_was_skipped():
    metrics = {"age_exact": 0.5, "age_ece": 0.08, "gender_acc": 0.9, "gender_ece": 0.03}
    skipped = build_model_card(typed_metadata(metrics=metrics, temperature={"age": 1.0, "gender": 0.8}),
                               None, "me/ages")
    assert "| age ECE (uncalibrated: T = 1" in skipped and "age ECE (calibrated)" not in skipped
    assert "| gender ECE (calibrated) | 0.030 |" in skipped  # this head was calibrated
