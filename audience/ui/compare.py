"""The Compare tab: every run of the runs folder in one table (with the served checkpoints and the results-only
rows of checkpoints/results/, audience.compare.results_file), charts of the chosen runs, the leakage view beside
published numbers, and "Use this model" to serve a run's checkpoint in the Predict tab.

A thin adapter over audience.compare (tables, plots, latency) and audience.publish.promote. API: `/compare`
(chosen run ids, detail run id, fold) -> (message, table, run chooser, detail run chooser, fold
accuracy, learning curves, per-class accuracy, age confusion, gender confusion, leakage table,
leakage chart, per-group accuracy table of the chosen runs, checkpoints table); `/promote` (run id, fold,
name) -> (message, checkpoints table): the copy goes to the user's models folder and becomes the default
model. `/promote` and `/measure_latency` are refused on a public deployment unless AUDIENCE_ALLOW_TRAINING=1,
like training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from audience import settings
from audience.bench.model_latency import measure_cpu_latency
from audience.compare import plots
from audience.compare import tables as compare
from audience.compare.results_file import RESULTS_PREFIX, describe_row, is_results_row, results_runs
from audience.compare.served_rows import SHIPPED_PREFIX, checkpoint_runs
from audience.data.adience import N_FOLDS
from audience.errors import AudienceError, quoted, shorten
from audience.inputs import check_path
from audience.model.catalog import save_default_choice
from audience.model.checkpoint import read_checkpoint_metadata
from audience.publish.promote import checkpoints_table, promote_checkpoint
from audience.registry import GLANCE_KEYS, LEAKY_LABEL, column_of
from audience.train import job as jobs

ALL_FOLDS = "all folds"
LATENCY_NOTE = ("CPU ms (per face, under 'show all columns'): the trainer's number when the run stores one; "
                "'-' until you press 'Measure CPU latency', which measures it here once per arch and image size "
                "with a random-init model (batch 1, median of 10 passes; weights do not change the time; a busy "
                "machine inflates it, so press it again when the machine is idle).")
# Pixel widths of compare.runs_table's columns, in its order (a test checks it): without them the
# browser squeezed 19 columns until headers broke mid-word ("age 1-" / "off %"). By default the table
# shows DEFAULT_RUN_COLUMNS only, each wide enough for its header on one or two whole words; "show all
# columns" adds cost, calibration, latency and problems, scrolling right. (pinned_columns would keep
# the run id in sight, but Gradio 6.31 renders no sticky column for it.)
RUN_COLUMN_WIDTHS = {
    "run": 162, "arch": 120, "task": 104, "protocol": 150, "dataset": 96, "state": 84, "folds": 64,
    column_of("age_exact"): 84, column_of("age_one_off"): 96, column_of("gender_acc"): 96,
    column_of("gender_acc_fm"): 96, column_of("balanced_age_exact"): 96, column_of("balanced_age_one_off"): 96,
    column_of("gender_acc_female"): 84, column_of("gender_acc_male"): 84, "age stable %": 84,
    "gender stable %": 84, "params (M)": 84,
    "GFLOPs": 74, "CPU ms": 62, "train time": 72, column_of("age_ece"): 62, column_of("gender_ece"): 74,
    "latency source": 110, "note": 220, "problems": 160,
}
DEFAULT_RUN_COLUMNS = ("run", "arch", "protocol", "dataset", "state", "folds", column_of(GLANCE_KEYS[0]),
                       column_of("age_one_off"), column_of(GLANCE_KEYS[1]), "age stable %", "gender stable %",
                       "train time")
# source, arch, protocol, dataset, the HEADLINE_KEYS accuracies, note: "50.7 ± 5.1" on one line
LEAKAGE_COLUMN_WIDTHS = [210, 120, 200, 120, 104, 104, 104, 104, 180]
# promote.checkpoints_table: checkpoint, arch, task, protocol, fold, data, the GLANCE_KEYS accuracies, metrics on,
# from run, problem (11 columns, which overflowed the accordion without widths)
SERVED_COLUMN_WIDTHS = [214, 100, 104, 120, 56, 92, 70, 70, 80, 160, 110]
# compare.group_accuracy_table: run, group, n, age exact %, age 1-off %, gender f/m %
GROUP_COLUMN_WIDTHS = [214, 300, 64, 96, 96, 104]
GROUP_NOTE = ("Test folds pooled, in percent: each age group's exact and 1-off accuracy, their mean over the groups "
              "that have faces (*balanced*: the big 22-32 group cannot carry it), gender on women and on men (f/m "
              "faces, the better of f and m), each race where the data records one (UTKFace) with the gap between "
              "the best and the worst, and all faces. Runs scored before per-group accuracy was recorded show the "
              "age groups their confusion matrix gives and say what is missing.")


def _all_runs() -> list:
    """The runs folder's runs, then the served checkpoints (the shipped model among them), then the results files
    of models whose weights are not shipped (checkpoints/results/), as rows."""
    return compare.read_runs(settings.runs_dir()) + checkpoint_runs() + results_runs()


def _runs_table(runs: list, all_columns: bool = False) -> pd.DataFrame:
    """The runs table as the tab shows it: DEFAULT_RUN_COLUMNS, or every column with `all_columns`."""
    columns = list(RUN_COLUMN_WIDTHS) if all_columns else list(DEFAULT_RUN_COLUMNS)
    return compare.runs_table(runs)[columns] if runs else pd.DataFrame(columns=columns)


def show_columns(all_columns: bool):
    """The runs table with the default or all columns, and their widths (the 'show all columns' box).

    The other handlers return the table's value only (a plain table in the API); the widths set here
    stay until the box changes again, and they follow the same box."""
    table = _runs_table(_all_runs(), all_columns)
    return gr.Dataframe(value=table, column_widths=[RUN_COLUMN_WIDTHS[name] for name in table.columns])


def _problems(runs: list) -> str:
    damaged = [f"- **{run.run_id}**: {'; '.join(run.errors)}" for run in runs if run.errors]
    if not damaged:
        return ""
    return "Some files could not be read (shown as far as they go):\n" + "\n".join(damaged)


def _results_lines(runs: list) -> str:
    """The results-only rows, each with its note and where its weights would be published."""
    rows = [run for run in runs if is_results_row(run.run_id) and not run.errors]
    if not rows:
        return ""
    return (f"Rows named `{RESULTS_PREFIX}` are **results only**: models trained on real faces whose weights are too "
            "large for the repository, shipped as their results file (`checkpoints/results/`); their CPU ms was "
            "measured with the trained weights at one thread where the file says. They cannot be served here.\n"
            + "\n".join(f"- {describe_row(run)}" for run in rows))


def _message(runs: list) -> str:
    if not any(not run.run_id.startswith((SHIPPED_PREFIX, RESULTS_PREFIX)) for run in runs):
        results, problems = _results_lines(runs), _problems(runs)
        return "\n\n".join(part for part in (
            f"**No training runs yet** in `{settings.runs_dir()}`. Train one in the Train tab (the demo preset; "
            "its time on a CPU is in docs/measurements.md) or run "
            "`python -m audience.cli.train --preset demo`; it appears here when it ends. Rows named "
            "`checkpoint:` are served models with the metrics recorded in their JSON (state *shipped*: it came "
            "with the app).", results, problems) if part)
    leaky = any(run.leaky for run in runs)
    parts = [f"{len(runs)} run(s) in `{settings.runs_dir()}`. Accuracies are test-fold means ± std over the folds "
             "done, in percent. *Stable %*: how often a served model's answer stays the same when the photo "
             "changes a little (shift, scale, tilt, light, JPEG, mirror; "
             "`python -m audience.cli.benchmark stability`). "
             + LATENCY_NOTE]
    if leaky:
        parts.append(f"Runs marked **{LEAKY_LABEL}** test on images of people seen in training: their numbers are "
                     "inflated and not comparable with `folds` runs.")
    if any(compare.dataset_of(run) == "synthetic demo" for run in runs):
        parts.append("*Synthetic demo* runs are trained on generated faces, not Adience.")
    results = _results_lines(runs)
    if results:
        parts.append(results)
    problems = _problems(runs)
    return "\n\n".join(parts + ([problems] if problems else []))


def _run_by_id(runs: list, run_id: str | None):
    return next((run for run in runs if run.run_id == run_id), None)


def _fold_choices(run) -> list[str]:
    return [ALL_FOLDS] + [str(fold) for fold in sorted(run.test_metrics)] if run is not None else [ALL_FOLDS]


def compare_runs(chosen: list[str] | None = None, detail_run: str | None = None, fold: str | None = None,
                 all_columns: bool = False):
    """The /compare handler: everything the tab shows, for the chosen runs (default: ResNet50 vs MobileNetV3);
    the runs table with its default columns, or every column with `all_columns`."""
    runs = _all_runs()
    ids = [run.run_id for run in runs]
    chosen = [run_id for run_id in (chosen or []) if run_id in ids] or compare.default_selection(runs)
    selected = [run for run in runs if run.run_id in chosen]
    detail = _run_by_id(runs, detail_run if detail_run in ids else (chosen[0] if chosen else None))
    folds = _fold_choices(detail)
    fold = fold if fold in folds else ALL_FOLDS
    fold_number = None if fold == ALL_FOLDS else int(fold)
    leakage = compare.leakage_frame(runs)
    return (
        _message(runs),
        _runs_table(runs, all_columns),
        gr.Dropdown(choices=ids, value=chosen, multiselect=True),
        gr.Dropdown(choices=ids, value=detail.run_id if detail else None),
        gr.Dropdown(choices=folds, value=fold),
        plots.plot_fold_accuracy(selected),
        plots.plot_learning_curves(selected),
        plots.plot_per_class(selected, "age"),
        plots.plot_confusion(detail, "age", fold_number),
        plots.plot_confusion(detail, "gender", fold_number),
        compare.leakage_table(runs),
        plots.plot_leakage(leakage),
        compare.group_accuracy_table(selected),
        checkpoints_table(),
    )


def _fold_to_promote(run, fold) -> str:
    """The fold number to promote: the chosen one, or the run's first finished fold for 'all folds'."""
    if fold in (None, "", ALL_FOLDS):
        if not run.test_metrics:
            raise AudienceError(f"Run {run.run_id} has no finished fold to serve yet.")
        return str(min(run.test_metrics))
    text = str(fold).strip()
    if text not in {str(number) for number in range(N_FOLDS)}:
        raise AudienceError(f"Fold {quoted(fold)} is not a fold: choose '{ALL_FOLDS}' or a fold number 0 to "
                            f"{N_FOLDS - 1}.")
    return text


def _server(demo: gr.Blocks | None) -> tuple[str | None, bool]:
    return getattr(demo, "server_name", None), bool(getattr(demo, "share", False))


def promote(run_id: str | None, fold: str | None, name: str | None = None, demo: gr.Blocks | None = None):
    """The /promote handler: copy the run's best checkpoint of `fold` into the user's models folder and make it
    the default model (the Predict tab selects it at once; a restart keeps it). Refused on a public
    deployment (without AUDIENCE_ALLOW_TRAINING=1): a visitor must not change the model everyone gets."""
    try:
        refusal = jobs.server_change_refusal("'Use this model'", *_server(demo))
        if refusal:
            raise AudienceError(refusal)
        if not run_id:
            raise AudienceError("Choose a run first.")
        check_path(run_id, "Run id")
        if str(run_id).startswith(SHIPPED_PREFIX):
            raise AudienceError(f"{shorten(run_id)} is a served checkpoint already; pick it in the Predict tab.")
        if is_results_row(run_id):
            raise AudienceError(f"{shorten(run_id)} is a results-only row: its weights are not shipped with the app, "
                                "so there is no model to serve.")
        run = _run_by_id(compare.read_runs(settings.runs_dir()), run_id)
        if run is None:
            raise AudienceError(f"Run {shorten(run_id)} is not in the runs folder.")
        fold = _fold_to_promote(run, fold)
        path = promote_checkpoint(run.path, int(fold), name=str(name or "").strip() or None)
        save_default_choice(path.name)
        synthetic = read_checkpoint_metadata(path).synthetic
    except AudienceError as error:
        gr.Warning(str(error))
        return f"**Not promoted:** {error}", checkpoints_table()
    message = (f"Fold {fold} of run {run_id} is served as **{path.stem}** (in the models folder) and is now the "
               "default model: the Predict tab uses it, also after a restart.")
    if synthetic:
        message += (" **It was trained on synthetic demo data: its predictions on real photos are meaningless.** To "
                    "serve a real model again, pick it in the Predict tab and press 'Make default'.")
    return message, checkpoints_table()


def _count_promotion(count: int | None) -> int:
    return (count or 0) + 1


@dataclass
class CompareTabEvents:
    """What other tabs may listen to: `promoted` changes (a count) after every press of 'Use this model'."""

    promoted: gr.State


def measure_latency(all_columns: bool = False, demo: gr.Blocks | None = None):
    """Measure (once per arch and image size, cached) the CPU latency of every arch in the runs folder; refused
    on a public deployment (seconds of CPU a call) without AUDIENCE_ALLOW_TRAINING=1."""
    refusal = jobs.server_change_refusal("Measuring the CPU latency", *_server(demo))
    if refusal:
        gr.Warning(refusal)
        return f"**Not measured:** {refusal}", gr.skip()
    runs = _all_runs()
    wanted = sorted({(r.config["arch"], compare.image_size_of(r)) for r in runs if r.config and r.config.get("arch")
                     and compare.image_size_of(r) and not is_results_row(r.run_id)})
    lines = [f"{run.run_id}: not measured here: its weights are not shipped, so its CPU ms is the one its results file "
             "records (measured with the trained weights at one thread)." for run in runs if is_results_row(run.run_id)]
    for arch, size in wanted:
        try:
            entry = measure_cpu_latency(arch, size, refresh=True)  # pressed on purpose: measure now
        except AudienceError as error:
            lines.append(f"{arch} at {size}px: {error}")
            continue
        lines.append(f"{arch} at {size}px: {entry['ms']:.1f} ms per face, median (fastest {entry['min_ms']:.1f} ms; "
                     f"{entry['threads']} threads)")
    text = "\n".join(f"- {line}" for line in lines) or "No run with a known arch and image size."
    return f"CPU latency (random-init model, batch 1):\n{text}", _runs_table(runs, all_columns) if runs else gr.skip()


def build_compare_tab(demo: gr.Blocks, train_events=None) -> CompareTabEvents:
    """The tab's components and events; call inside `with gr.Tab("Compare", id="compare"):`.

    `train_events` (what build_train_tab returns) refreshes the tab whenever a training run ends; the
    Predict tab listens to the returned events to list a promoted model at once.
    """
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm", scale=1)
        latency = gr.Button("Measure CPU latency", size="sm", scale=1)
    latency_message = gr.Markdown()
    message = gr.Markdown()
    all_columns = gr.Checkbox(False, label="show all columns",
                              info="also task, gender f/m/u, balanced age, women, men, parameters, GFLOPs, CPU ms, "
                                   "calibration, notes, problems")
    table = gr.Dataframe(label="Runs (newest first)", interactive=False, wrap=True,
                         column_widths=[RUN_COLUMN_WIDTHS[name] for name in DEFAULT_RUN_COLUMNS])
    # allow_custom_value on the choosers: the handlers check every id against the runs folder themselves.
    chosen = gr.Dropdown(multiselect=True, label="Runs to chart (default: newest ResNet50 and MobileNetV3)",
                         allow_custom_value=True)
    with gr.Row():
        fold_accuracy = gr.Plot(label="Accuracy per fold")
        curves = gr.Plot(label="Learning curves")
    per_class = gr.Plot(label="Age accuracy per class")
    with gr.Accordion("Per-group accuracy of the charted runs (who the model fails)", open=True):
        gr.Markdown(GROUP_NOTE)
        groups = gr.Dataframe(interactive=False, wrap=True, column_widths=GROUP_COLUMN_WIDTHS)
    with gr.Row():
        detail = gr.Dropdown(label="Run for the confusion matrices and 'Use this model'", scale=3,
                             allow_custom_value=True)
        fold = gr.Dropdown([ALL_FOLDS], value=ALL_FOLDS, label="Fold", scale=1, allow_custom_value=True)
    with gr.Row():
        age_confusion = gr.Plot(label="Age confusion (8 x 8)")
        gender_confusion = gr.Plot(label="Gender confusion (3 x 3)")
    with gr.Accordion("Use this model (serve it in the Predict tab)", open=False):
        with gr.Row():
            name = gr.Textbox(label="Name (optional)", placeholder="default: arch-task-protocol-fold-date", scale=3)
            use = gr.Button("Use this model", variant="primary", scale=1)
        use_message = gr.Markdown()
        served = gr.Dataframe(label="Served checkpoints", interactive=False, wrap=True,
                              column_widths=SERVED_COLUMN_WIDTHS)
    with gr.Accordion("Leakage: random vs folds, and published numbers", open=True):
        gr.Markdown("The seed's numbers come from a random image split (the same people in training and test): "
                    "not comparable with subject-exclusive folds. Levi & Hassner 2015 is the literature's "
                    "subject-exclusive 5-fold result. Synthetic demo runs are not Adience at all.")
        leakage = gr.Dataframe(interactive=False, wrap=True, column_widths=LEAKAGE_COLUMN_WIDTHS)
        leakage_plot = gr.Plot(label="Leakage")

    outputs = [message, table, chosen, detail, fold, fold_accuracy, curves, per_class, age_confusion,
               gender_confusion, leakage, leakage_plot, groups, served]
    inputs = [chosen, detail, fold, all_columns]
    refresh.click(compare_runs, inputs=inputs, outputs=outputs, api_name="compare")
    for control in (chosen, detail, fold):
        control.input(compare_runs, inputs=inputs, outputs=outputs, api_visibility="private")
    demo.load(compare_runs, inputs=inputs, outputs=outputs, api_visibility="private")
    promoted = gr.State(0)
    use.click(functools.partial(promote, demo=demo), inputs=[detail, fold, name], outputs=[use_message, served],
              api_name="promote").then(_count_promotion, inputs=[promoted], outputs=[promoted],
                                       api_visibility="private")
    latency.click(functools.partial(measure_latency, demo=demo), inputs=[all_columns],
                  outputs=[latency_message, table], api_name="measure_latency")
    all_columns.input(show_columns, inputs=[all_columns], outputs=[table], api_visibility="private")
    if train_events is not None:
        train_events.run_ended.change(compare_runs, inputs=inputs, outputs=outputs, api_visibility="private")
    return CompareTabEvents(promoted=promoted)
