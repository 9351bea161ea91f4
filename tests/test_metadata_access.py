"""The checkpoint is a typed object everywhere (issue 22): no module outside the model stage indexes checkpoint
metadata as a dict, and the blocks of the JSON read as typed objects, leniently where the app only shows them.

The check reads every module with `ast`. Metadata is what a name holds when it is called `metadata`/`meta`,
annotated with one of audience.model.metadata's classes, or assigned from `read_checkpoint_metadata(...)`,
`check_checkpoint_metadata(...)` or the third value of `load_checkpoint(...)`; its attributes (except the few
that are mappings by design, keyed by head, package or reason) and its `as_json()`/`model_dump()`/`as_dict()`
are metadata too. Reading any of these with `[...]`, `.get(...)`, `.items()` and friends, or `dict(...)`, fails.
A writer that changes a checkpoint starts from `as_json()` under another name and may set keys there.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pydantic
import pytest

from audience.errors import AudienceError
from audience.model import metadata as metadata_module
from audience.model.checkpoint import read_checkpoint_metadata
from audience.model.metadata import (
    Calibration,
    CropInfo,
    Metrics,
    PromotedFrom,
    TrainConfigRecord,
    TrainingInfo,
    check_checkpoint_metadata,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "utkface-mobilenetv3.json"
META_NAMES = {"metadata", "meta", "checkpoint_metadata"}
READERS = {"read_checkpoint_metadata", "check_checkpoint_metadata"}
META_CLASSES = {name for name, value in vars(metadata_module).items()
                if isinstance(value, type) and issubclass(value, pydantic.BaseModel)
                and value.__module__ == metadata_module.__name__}
# Mappings by design, keyed by data (a head, a package, a reason): reading them by key is not reading the metadata
# as a dict. Sequences (channels, classes, per-class lists, commands) are indexed by position.
MAPPING_FIELDS = {"temperature", "temperatures", "versions", "dropped", "model_fields_set"}
SEQUENCE_FIELDS = {"mean", "std", "age_classes", "gender_classes", "age_per_class", "gender_per_class",
                   "age_confusion", "gender_confusion", "commands"}
DICT_EXPORTS = {"as_json", "model_dump", "as_dict"}
DICT_METHODS = {"get", "items", "keys", "values", "setdefault", "pop", "update"}


def _callee(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return None


def _pairs(node: ast.Assign | ast.AnnAssign):
    """(target name, value) of each name an assignment binds (`a, b = x, y` pairwise)."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for target in targets:
        if isinstance(target, ast.Name):
            yield target.id, node.value
        elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) and len(target.elts) == len(
                node.value.elts):
            yield from ((t.id, v) for t, v in zip(target.elts, node.value.elts, strict=True) if isinstance(t, ast.Name))


def _metadata_names(tree: ast.AST) -> set[str]:
    """The names of a module that hold checkpoint metadata: by name, by annotation, by where they come from
    (a reader, load_checkpoint's third value) and aliases of metadata (`metrics = metadata.metrics or {}`). The
    result of `as_json()` under a name is a writer's copy, not followed."""
    names = set(META_NAMES)
    assignments = [node for node in ast.walk(tree) if isinstance(node, ast.Assign | ast.AnnAssign) and node.value]
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            if {n.id for n in ast.walk(node.annotation) if isinstance(n, ast.Name)} & META_CLASSES:
                names.add(node.arg)
    for node in assignments:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if (_callee(node.value) == "load_checkpoint" and isinstance(target, ast.Tuple)
                    and isinstance(target.elts[-1], ast.Name)):
                names.add(target.elts[-1].id)
    while True:
        aliases = {name for node in assignments for name, value in _pairs(node)
                   if _callee(value) != "as_json" and not _sequence(value) and _is_metadata(value, names)}
        if aliases <= names:
            return names
        names |= aliases


def _sequence(node: ast.AST) -> bool:
    """A sequence field (`metadata.metrics.gender_per_class or []`): indexed by position."""
    if isinstance(node, ast.BoolOp):
        return any(_sequence(value) for value in node.values)
    return isinstance(node, ast.Attribute) and node.attr in SEQUENCE_FIELDS


def _is_metadata(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, ast.Attribute):
        if node.attr in META_NAMES:  # self.metadata, predictor.metadata
            return True
        return node.attr not in MAPPING_FIELDS and _is_metadata(node.value, names)
    if isinstance(node, ast.BoolOp):  # metadata.metrics or {}
        return any(_is_metadata(value, names) for value in node.values)
    if isinstance(node, ast.Subscript):  # metadata["crop"]["margin"]
        return _is_metadata(node.value, names)
    if isinstance(node, ast.Call):
        if _callee(node) in READERS:
            return True
        func = node.func  # metadata.as_json(), stability.get("peer") or {}
        return (isinstance(func, ast.Attribute) and func.attr in DICT_EXPORTS | {"get"}
                and _is_metadata(func.value, names))
    return False


def dict_reads_of_metadata(source: str) -> list[str]:
    """'line: code' for each place `source` reads checkpoint metadata as a dict."""
    tree = ast.parse(source)
    names = _metadata_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            value = node.value
            by_position = (isinstance(value, ast.Attribute) and value.attr in SEQUENCE_FIELDS
                           and not (isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)))
            hit = _is_metadata(value, names) and not by_position
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DICT_METHODS:
            hit = _is_metadata(node.func.value, names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            hit = any(_is_metadata(arg, names) for arg in node.args)
        else:
            continue
        if hit:
            found.append(f"{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def _checked_files() -> list[Path]:
    package = ROOT / "audience"
    return sorted([*(path for path in package.rglob("*.py") if (package / "model") not in path.parents),
                   ROOT / "app.py", *(ROOT / "scripts").glob("*.py")])


def test_no_module_outside_the_model_stage_indexes_checkpoint_metadata_as_a_dict():
    files = _checked_files()
    assert len(files) > 50 and ROOT / "audience" / "publish" / "model_card.py" in files
    problems = {str(path.relative_to(ROOT)): found for path in files
                if (found := dict_reads_of_metadata(path.read_text(encoding="utf-8")))}
    assert not problems, problems


@pytest.mark.parametrize("code", [
    'x = metadata["arch"]',
    'x = meta.get("fold")',
    'x = (metadata.metrics or {}).get("age_exact")',
    'x = metadata.training["commands"]',
    'x = self.metadata.metrics.get("gender_per_class")',
    'x = predictor.metadata.crop["margin"]',
    'x = read_checkpoint_metadata(path).as_json()["stability"]',
    'x = metadata.as_json().get("crop")',
    'x = metadata.stability.model_dump()["images"]',
    'x = metadata.metrics.as_dict()["age_exact"]',
    'c = dict(metadata.train_config or {})',
    'for k, v in metadata.calibration.items():\n    pass',
    'm = read_checkpoint_metadata(path)\nx = m.promoted_from["run"]',
    '_, _, m = load_checkpoint(path)\nx = m.dataset.get("name")',
    'def f(info: CheckpointMetadata | None):\n    return info["fold"]',
    'def f(crop: CropInfo):\n    return crop.get("margin")',
    'metrics = metadata.metrics or {}\nx = [k for k in keys if metrics.get(k)]',
    'metrics, source = meta.metrics or {}, meta.promoted_from or {}\nx = source.get("run")',
    'stability = metadata.stability.model_dump()\npeer = stability.get("peer") or {}',
    'training = metadata.training or {}\nt = training["machine"]',
    'peer = metadata.stability.peer.get("x") or {}\nrow = peer.get("package")',
    'x = metadata.mean["r"]',
])
def test_the_check_sees_a_dict_read_of_metadata(code):
    assert dict_reads_of_metadata(code), code


@pytest.mark.parametrize("code", [
    "x = metadata.metrics.age_exact",
    'x = metadata.metric("age_exact")',
    'x = metadata.temperatures.get(head, 1.0)',
    'x = (metadata.temperature or {}).get("age")',
    'x = ", ".join(f"{k} {v}" for k, v in (metadata.versions or {}).items())',
    "x = metadata.mean[0] + metadata.age_classes[i]",
    'x = "train_config" in metadata.model_fields_set',
    'updated = read_checkpoint_metadata(path).as_json()\nupdated["stability"] = record',
    'published = metadata.as_json()\npublished["train_config"]["data"] = "adience"',
    'x = summary.get("protocol")',
    'x = model.metadata_props[0]',
    'per_class = metadata.metrics and metadata.metrics.gender_per_class\nx = per_class[2]',
    'config = {"arch": metadata.arch, **metadata.train_config.as_dict()}\nconfig.setdefault("task", "age")',
])
def test_the_check_lets_typed_reads_and_writers_pass(code):
    assert not dict_reads_of_metadata(code), code


# --- the typed blocks ----------------------------------------------------------------------------------------


def _minimal(**blocks) -> dict:
    return {"format_version": 1, "arch": "tiny", "task": "age+gender", "image_size": 32, "mean": [0.5] * 3,
            "std": [0.5] * 3, **blocks}


def test_the_shipped_checkpoint_reads_as_typed_blocks():
    metadata = read_checkpoint_metadata(SHIPPED)
    raw = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert isinstance(metadata.metrics, Metrics) and metadata.metrics.age_exact == raw["metrics"]["age_exact"]
    assert metadata.metric("gender_acc_fm") == raw["metrics"]["gender_acc_fm"]
    assert metadata.metrics.age_n == raw["metrics"]["age_n"] and isinstance(metadata.metrics.age_n, int)
    assert metadata.metrics.gender_per_class[2] is None  # UTKFace has no "u" face
    assert metadata.metrics.age_confusion == raw["metrics"]["age_confusion"]
    assert isinstance(metadata.training, TrainingInfo) and metadata.training.commands == raw["training"]["commands"]
    assert metadata.training.train_seconds == raw["training"]["train_seconds"]
    assert isinstance(metadata.calibration, Calibration) and metadata.calibration.heads == ("age", "gender")
    assert metadata.calibration.of("gender").test_ece_after == raw["calibration"]["gender"]["test_ece_after"]
    assert metadata.calibration.age.applied is True
    assert isinstance(metadata.crop, CropInfo) and metadata.crop.margin == raw["crop"]["margin"]
    assert metadata.crop.detector == raw["crop"]["detector"]
    assert isinstance(metadata.promoted_from, PromotedFrom)
    assert metadata.promoted_from.run == raw["promoted_from"]["run"]
    assert isinstance(metadata.train_config, TrainConfigRecord) and metadata.train_config.arch == raw["arch"]
    assert metadata.train_config.as_dict() == raw["train_config"]  # every key kept, unknown ones included
    assert metadata.stability.peer.package == raw["stability"]["peer"]["package"]
    assert metadata.stability.faces_found == raw["stability"]["faces_found"]
    assert metadata.dataset.faces == raw["dataset"]["faces"] and metadata.dataset.dropped == {}
    assert metadata.as_json() == raw  # the format on disk is unchanged


def test_an_old_checkpoint_without_the_blocks_reads_them_as_none(tmp_path):
    """A checkpoint from before these blocks existed (no metrics, training, calibration, crop, ...)."""
    metadata = check_checkpoint_metadata(_minimal(), "old.json")
    for block in ("metrics", "training", "calibration", "crop", "train_config", "promoted_from", "stability",
                  "versions"):
        assert getattr(metadata, block) is None, block
    assert metadata.metric("age_exact") is None
    from audience.compare.served_rows import checkpoint_run
    from audience.publish.model_card import build_model_card

    card = build_model_card(metadata, None, "me/old")
    assert "No metrics are recorded" in card and "face crop: not recorded" in card and "Not calibrated." in card
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_minimal()), encoding="utf-8")
    row = checkpoint_run(path)
    assert row.config["arch"] == "tiny" and row.summary["train_seconds"] is None and row.test_metrics == {}


def test_values_of_another_type_read_as_missing_and_never_make_a_checkpoint_unreadable():
    odd = _minimal(
        metrics={"age_exact": "high", "gender_acc": 0.9, "age_n": 1.5, "gender_per_class": "f and m"},
        training=["python train.py"], calibration={"age": 3, "gender": {"temperature": "warm", "applied": True}},
        train_config={"data": 7, "arch": "tiny", "old_setting": [1, 2]}, promoted_from="a run",
        crop={"margin": 0.3, "measured_on": "many"}, versions=["torch"], dataset={"name": "x", "faces": "lots"})
    metadata = check_checkpoint_metadata(odd, "odd.json")
    assert metadata.metrics.age_exact is None and metadata.metric("age_exact") is None
    assert metadata.metric("gender_acc") == 0.9 and metadata.metrics.age_n is None
    assert metadata.metrics.gender_per_class is None
    assert metadata.training is None and metadata.promoted_from is None and metadata.versions is None
    assert metadata.calibration.age is None and metadata.calibration.gender.temperature is None
    assert metadata.calibration.gender.applied is True
    assert metadata.train_config.data is None and metadata.train_config.arch == "tiny"
    assert metadata.train_config.as_dict()["old_setting"] == [1, 2]
    assert metadata.crop.margin == 0.3 and metadata.crop.measured_on is None
    assert metadata.dataset.faces is None
    assert metadata.as_json() == odd  # read as it was: a writer keeps every value


def test_metrics_the_registry_adds_pass_through_and_read_by_key():
    """Per-group metrics (another branch adds them to the registry) are extra keys of `metrics`."""
    metadata = check_checkpoint_metadata(_minimal(metrics={"age_exact": 0.5, "balanced_age_exact": 0.4,
                                                           "gender_acc_women": 0.91, "age_exact_by_race": [0.5]}),
                                         "new.json")
    assert metadata.metric("balanced_age_exact") == 0.4 and metadata.metric("gender_acc_women") == 0.91
    assert metadata.metric("age_exact_by_race") is None  # not a number
    assert metadata.metric("number") is None and metadata.metric("model_fields") is None  # methods are not metrics
    assert metadata.metrics.as_dict() == {"age_exact": 0.5, "balanced_age_exact": 0.4, "gender_acc_women": 0.91,
                                          "age_exact_by_race": [0.5]}


def test_the_blocks_the_app_relies_on_are_still_checked():
    with pytest.raises(AudienceError, match="metrics"):
        check_checkpoint_metadata(_minimal(metrics=[0.5]), "bad.json")
    with pytest.raises(AudienceError, match="crop"):
        check_checkpoint_metadata(_minimal(crop=5), "bad.json")
    with pytest.raises(AudienceError, match="stability"):
        check_checkpoint_metadata(_minimal(stability={"age_agreement": 2.0, "gender_agreement": 0.5, "images": 1,
                                                      "versions": 1}), "bad.json")


def test_a_copied_shipped_checkpoint_keeps_its_json_through_a_writer(tmp_path):
    """A writer (the stability benchmark's) starts from as_json(): every key survives, typed or not."""
    from audience.bench.stability import write_stability

    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED.with_suffix(suffix), tmp_path / f"m{suffix}")
    before = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    result = {"audience": {"age_agreement": 0.9, "gender_agreement": 0.95, "age_exact": 0.6, "n_age": 10,
                           "faces_found": 10, "faces_found_perturbed": 80, "aligned": True},
              "peer": {"error": "not installed"}, "images": 10, "versions": 8, "data": "x", "perturbations": "p",
              "seed": 0}
    write_stability(tmp_path / "m.json", result)
    after = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in after.items() if k != "stability"} == {k: v for k, v in before.items()
                                                                    if k != "stability"}
    assert read_checkpoint_metadata(tmp_path / "m.json").stability.age_agreement == 0.9
