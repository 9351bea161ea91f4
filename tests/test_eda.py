"""EDA functions on the synthetic demo root and the real Adience fold files, and the EDA tab over gradio_client."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go
import pytest
from PIL import Image

from audience.data.adience import read_adience, read_demo_marker
from audience.eda import tables as eda
from audience.eda.images import build_sample_grid, image_size_table, plot_image_sizes
from audience.eda.report import FIGURE_NAMES, UTKFACE_FIGURES, build_eda
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES

CANONICAL = {"(0, 2)": "0-2", "(4, 6)": "3-6", "(8, 12)": "8-13", "(15, 20)": "15-20", "(25, 32)": "22-32",
             "(38, 43)": "34-43", "(48, 53)": "45-53", "(60, 100)": "55-100"}
# The other raw age strings of the real files (../shared/README.md) and the class `bins` gives each, by hand.
NOISY_BINS = {
    "None": "dropped", "2": "0-2", "3": "3-6", "13": "8-13", "22": "22-32", "23": "22-32", "29": "22-32",
    "32": "22-32", "34": "34-43", "35": "34-43", "36": "34-43", "42": "34-43", "45": "45-53", "46": "45-53",
    "55": "55-100", "56": "55-100", "57": "55-100", "58": "55-100", "(27, 32)": "22-32", "(25, 23)": "22-32",
    "(38, 42)": "34-43", "(38, 48)": "dropped", "(8, 23)": "dropped",
}
META_ROWS_PER_FOLD = [4496, 3745, 3953, 3459, 3834]
META_CANONICAL_PER_FOLD = [4316, 3101, 3339, 2975, 3693]


@pytest.fixture(scope="module")
def demo_data(demo_root):
    return read_adience(demo_root)


@pytest.fixture(scope="module")
def meta_data(adience_meta):
    return read_adience(adience_meta, "bins", "none")


def test_summary_of_demo_is_json_and_adds_up(demo_root, demo_data):
    summary = json.loads(json.dumps(eda.summarize(demo_data)))
    marker = read_demo_marker(demo_root)
    assert summary["synthetic"] is True and summary["images"] == "aligned" and summary["policy"] == "bins"
    assert summary["rows"] == marker["images"] and summary["users"] == marker["albums"]
    assert summary["rows_per_fold"] == marker["rows_per_fold"]
    assert summary["subjects"] == marker["n_subjects"] and summary["missing_images"] == 0
    assert len(summary["age_counts"]) == len(AGE_CLASSES)
    assert sum(summary["age_counts"]) + summary["no_age_class"] == summary["rows"]
    assert sum(summary["age_rows_per_fold"]) == sum(summary["age_counts"])
    assert set(summary["gender_counts"]) == {"f", "m", "u"}
    assert sum(summary["gender_counts"].values()) + summary["no_gender_class"] == summary["rows"]
    assert summary["no_age_class"] > 0 and summary["no_gender_class"] > 0  # the demo carries label noise


@pytest.mark.parametrize("policy", ["bins", "strict"])
def test_summary_of_real_metadata(adience_meta, policy):
    summary = eda.summarize(read_adience(adience_meta, policy, "none"))
    assert summary["synthetic"] is False and summary["images"] == "none"
    assert (summary["rows"], summary["users"], summary["subjects"]) == (19487, 168, 2284)
    assert summary["rows_per_fold"] == META_ROWS_PER_FOLD
    assert summary["gender_counts"] == {"f": 9411, "m": 8192, "u": 1100} and summary["no_gender_class"] == 784
    if policy == "strict":
        assert summary["age_rows_per_fold"] == META_CANONICAL_PER_FOLD and sum(summary["age_counts"]) == 17424
    else:  # only `None` (753 rows) and the two intervals spanning two classes (7 rows) stay without a class
        assert summary["no_age_class"] == 753 + 6 + 1
    assert summary["duplicate_rows"] == 117


@pytest.mark.parametrize("policy, class_rows", [("bins", 19), ("strict", 11)])
def test_summary_of_real_sample(adience_sample, policy, class_rows):
    summary = eda.summarize(read_adience(adience_sample, policy))
    assert summary["images"] == "faces" and summary["rows"] == 19 and summary["missing_images"] == 19468
    assert summary["gender_counts"] == {"f": 8, "m": 11, "u": 0}
    # face 1 is labelled (25, 23): 22-32 under bins, dropped under strict; face 2 is (25, 32)
    assert summary["age_counts"][AGE_CLASSES.index("22-32")] == class_rows == sum(summary["age_counts"])


def test_noise_table_covers_every_real_string(meta_data):
    table = eda.label_noise_table(meta_data)
    ages = table[table["field"] == "age"].set_index("raw")
    assert set(ages.index) == set(CANONICAL) | set(NOISY_BINS)
    assert ages["rows"].sum() == 19487 and ages.loc["None", "rows"] == 753
    for raw, name in CANONICAL.items():
        assert (ages.loc[raw, "bins"], ages.loc[raw, "strict"]) == (name, name)
    for raw, name in NOISY_BINS.items():
        assert (ages.loc[raw, "bins"], ages.loc[raw, "strict"]) == (name, "dropped"), raw
    genders = table[table["field"] == "gender"].set_index("raw")
    assert genders["rows"].to_dict() == {"f": 9411, "m": 8192, "u": 1100, eda.EMPTY_RAW: 784}
    assert genders.loc[eda.EMPTY_RAW, "bins"] == genders.loc[eda.EMPTY_RAW, "strict"] == "dropped"
    assert genders.loc["u", "bins"] == "u"


def test_tables_agree_with_the_summary(demo_data):
    summary = eda.summarize(demo_data)
    assert eda.age_table(demo_data)["rows"].tolist() == summary["age_counts"]
    assert eda.gender_table(demo_data)["rows"].tolist() == list(summary["gender_counts"].values())
    assert eda.age_table(demo_data)["share"].sum() == pytest.approx(1.0)
    crossed = eda.age_gender_table(demo_data)
    assert list(crossed.index) == list(AGE_CLASSES) and list(crossed.columns) == ["f", "m", "u", "dropped"]
    assert crossed.sum(axis=1).tolist() == summary["age_counts"]
    assert eda.fold_class_table(demo_data).sum(axis=1).tolist() == summary["age_rows_per_fold"]
    per_subject = eda.subject_image_counts(demo_data)
    assert len(per_subject) == summary["subjects"] and per_subject.sum() == summary["rows"]


def test_every_figure_has_data_and_the_synthetic_mark(demo_data):
    result = build_eda(demo_data, sample=30)
    assert list(result.figures) == [name for name in FIGURE_NAMES if name not in UTKFACE_FIGURES]
    for name, figure in result.figures.items():
        assert isinstance(figure, go.Figure), name
        assert figure.data and any(len(trace.x) for trace in figure.data if trace.x is not None), name
        assert figure.layout.title.text.endswith(eda.SYNTHETIC_MARK), name
    assert result.summary == eda.summarize(demo_data)
    assert len(result.sizes) == 30 and isinstance(result.grid, Image.Image)


def test_real_figures_carry_no_synthetic_mark(meta_data):
    for name, figure in eda.build_table_figures(meta_data).items():
        assert eda.SYNTHETIC_MARK not in figure.layout.title.text, name
    fold_rows = [int(sum(trace.customdata)) for trace in eda.plot_fold_classes(meta_data).data]
    assert fold_rows == eda.summarize(meta_data)["age_rows_per_fold"]


def test_images_per_subject_says_how_many_images_share_a_subject(meta_data):
    figure = eda.plot_images_per_subject(meta_data)
    counts = eda.subject_image_counts(meta_data)
    faces = meta_data.faces
    shared = int((faces.groupby(["user_id", "face_id"])["fold"].transform("size") > 1).sum())
    assert len(counts) == 2284 and counts.max() == 417  # one subject with 417 images: the long tail
    # widening bins, so 417 does not squash the 1-5 bars against the axis; log y keeps the tail visible
    assert list(figure.data[0].x) == ["1", "2", "3", "4", "5", "6-7", "8-10", "11-15", "16-25", "26-50", "51-100",
                                      "101-200", "201-500"]
    assert sum(figure.data[0].y) == 2284 and figure.data[0].y[0] == int((counts == 1).sum())
    assert figure.data[0].y[-1] == int((counts >= 201).sum()) > 0 and figure.layout.yaxis.type == "log"
    assert f"{shared} of 19487 images ({shared / 19487:.0%})" in figure.layout.annotations[0].text
    assert shared / 19487 > 0.9  # nearly every Adience image has a sibling of the same person: split by subject


def test_image_sizes_read_headers_and_survive_a_corrupt_file(demo_root, demo_data, tmp_path):
    expected = read_demo_marker(demo_root)["image_size"]
    sizes = image_size_table(demo_data, sample=12, seed=1)
    assert len(sizes) == 12 and sizes["error"].isna().all()
    assert set(sizes["width"]) == set(sizes["height"]) == {expected} and set(sizes["format"]) == {"JPEG"}
    assert image_size_table(demo_data, sample=0).empty

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    faces = demo_data.faces.copy()
    faces.loc[faces.index[:3], "path"] = str(broken)
    damaged = dataclasses.replace(demo_data, faces=faces.iloc[:3])
    sizes = image_size_table(damaged)
    assert len(sizes) == 3 and sizes["error"].str.contains("UnidentifiedImageError").all()
    note = plot_image_sizes(damaged, sizes).layout.annotations[0].text.replace("<br>", " ")
    assert "None of the 3 sampled images could be read" in note
    assert build_sample_grid(damaged, per_class=2).size[0] > 0  # a grey tile, not an exception

    figure = plot_image_sizes(demo_data, image_size_table(demo_data, sample=12))
    assert figure.data[0].x[0] == expected and sum(figure.data[0].customdata) == 12


def test_labels_only_data_gives_empty_image_views(meta_data):
    sizes = image_size_table(meta_data)
    assert sizes.empty and list(sizes.columns) == ["path", "width", "height", "format", "error"]
    figure = plot_image_sizes(meta_data, sizes)
    assert not figure.data and "images 'none'" in figure.layout.annotations[0].text.replace("<br>", " ")
    grid = build_sample_grid(meta_data)
    assert grid.height < 200  # a one-line message, not a montage of blank tiles


def test_sample_grid_shows_faces_per_class(demo_data):
    grid = build_sample_grid(demo_data, per_class=5, tile=64)
    wide = build_sample_grid(demo_data, per_class=7, tile=64)
    assert wide.width - grid.width == 2 * (64 + 4)  # two more tiles per row
    assert grid.height == 32 + len(AGE_CLASSES) * (64 + 4)
    pixels = grid.convert("L")
    first_tile = pixels.crop((96, 32, 96 + 64, 32 + 64))  # the first face of class 0-2
    assert first_tile.getextrema()[1] - first_tile.getextrema()[0] > 50  # a drawn face, not a flat grey tile
    assert build_sample_grid(demo_data, seed=1).tobytes() != build_sample_grid(demo_data, seed=2).tobytes()


def test_empty_table_still_gives_figures(demo_data):
    empty = dataclasses.replace(demo_data, faces=demo_data.faces.iloc[:0])
    result = build_eda(empty)
    assert result.summary["rows"] == 0 and result.summary["rows_per_fold"] == [0] * 5
    assert all(isinstance(figure, go.Figure) for figure in result.figures.values())
    assert result.noise.empty


# ---- the EDA tab -------------------------------------------------------------------------------


@pytest.fixture
def allowed_demo(demo_root, tmp_path, monkeypatch):
    """The demo root made openable by the UI; tmp_path/allowed is a second allowed folder."""
    (tmp_path / "allowed").mkdir()
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUDIENCE_DATA_DIRS", os.pathsep.join([str(demo_root.parent), str(tmp_path / "allowed")]))
    monkeypatch.delenv("AUDIENCE_DATA", raising=False)
    return demo_root


def _shown_figures(outputs) -> dict:
    """run_eda's charts by name: a figure, or None where the chart is cleared or hidden."""
    from audience.eda.report import FIGURE_NAMES

    def figure(output):
        if isinstance(output, gr.components.Component):  # the UTKFace-only charts, with their visibility
            return output.value if output.visible else None
        return output

    return {name: figure(output) for name, output in zip(FIGURE_NAMES, outputs, strict=True)}


def test_only_allowed_roots_are_opened_on_a_public_server(allowed_demo, tmp_path):
    from audience import settings
    from audience.data.roots import resolve_data_root
    from audience.ui.eda import run_eda

    def resolve_allowed_root(root):
        return resolve_data_root(root, allowed=settings.allowed_data_dirs())

    assert resolve_allowed_root(str(allowed_demo)) == allowed_demo.resolve()
    (tmp_path / "outside").mkdir()
    (tmp_path / "allowed" / "link").symlink_to(tmp_path / "outside")
    rejected = ["/etc", str(allowed_demo / ".." / ".." / "elsewhere"), str(tmp_path / "allowed" / "link"), "", "  "]
    for root in rejected:
        with pytest.raises(AudienceError):
            resolve_allowed_root(root)
    shown = run_eda(str(allowed_demo), "bins", "auto", "0.0.0.0")
    assert "rows (faces)" in shown[0]
    for root in ("/etc", str(tmp_path / "allowed" / "link"), "/proc/self/cwd", "~"):
        outputs = run_eda(root, "bins", "auto", "0.0.0.0")
        summary = outputs[0].replace("\\", "")
        assert "not under a folder the app may open" in summary and root in summary
        # neither the allowed folders nor where the typed path leads are named
        assert str(allowed_demo.parent) not in summary and str(tmp_path / "outside") not in summary
        assert str(Path.cwd()) not in summary and str(Path.home()) not in summary
        # a refusal clears the charts, table and faces: nothing of the last root stays under it
        assert len(outputs) == len(FIGURE_NAMES) + 3
        assert all(figure is None for figure in _shown_figures(outputs[1:-2]).values())
        assert outputs[-2].empty and outputs[-1] is None
    # the same folder through a share link is refused too
    assert "not under a folder" in run_eda("/etc", "bins", "auto", "127.0.0.1", True)[0]


def test_a_local_run_opens_any_folder(allowed_demo, tmp_path):
    from audience.ui.eda import run_eda

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(allowed_demo, elsewhere)
    summary = run_eda(str(elsewhere), "bins", "auto", "127.0.0.1")[0]
    assert "rows (faces)" in summary and "Could not" not in summary
    # what it contains is checked the same way: a folder that is no dataset gets its sentence, charts cleared
    outputs = run_eda(str(tmp_path), "bins", "auto", "localhost")
    assert outputs[0].startswith("**Could not load the data:**") and "neither an Adience root" in outputs[0]
    assert all(figure is None for figure in _shown_figures(outputs[1:-2]).values())


def test_a_labels_only_root_opens_with_images_none_and_says_so(allowed_demo, adience_meta, monkeypatch):
    from audience.ui.eda import LABELS_ONLY_NOTE, run_eda

    monkeypatch.setenv("AUDIENCE_DATA_DIRS", str(adience_meta.parent))
    summary, *figures, noise, grid = run_eda(str(adience_meta), "bins", "auto")
    assert summary.startswith(LABELS_ONLY_NOTE) and "images **none**" in summary and "Could not" not in summary
    assert "| 19487 |" in summary.replace("rows (faces) ", "")  # every labelled row counted
    shown = _shown_figures(figures)
    # Adience has no exact ages or race: those two panels are hidden, every other chart is drawn
    assert shown["age_years"] is None and shown["race"] is None
    assert all(isinstance(shown[name], go.Figure) for name in shown if name not in ("age_years", "race"))
    assert not noise.empty
    assert isinstance(grid, Image.Image)  # the montage says that no image was read
    # asked for a folder it does not have, it still refuses with the reason
    assert "aligned: folder not found" in run_eda(str(adience_meta), "bins", "aligned")[0]


def test_the_summary_table_has_a_header_not_a_blank_row(allowed_demo):
    from audience.ui.eda import run_eda

    lines = run_eda(str(allowed_demo), "bins", "auto")[0].splitlines()
    header = lines[lines.index("|---|---|") - 1]
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["what", "value"]


def test_run_eda_returns_every_output(allowed_demo):
    from audience.ui.eda import run_eda

    summary, *figures, noise, grid = run_eda(str(allowed_demo), "strict", "auto")
    assert summary.startswith("> **Synthetic demo data.**") and "strict" in summary
    shown = _shown_figures(figures)
    assert [name for name, figure in shown.items() if isinstance(figure, go.Figure)] == list(FIGURE_NAMES[:6])
    assert set(noise["field"]) == {"age", "gender"} and isinstance(grid, Image.Image)
    missing = run_eda(str(allowed_demo / "nope"), "bins", "auto")[0]
    assert missing.startswith("**Could not load the data:**") and "data root not found" in missing


def test_eda_tab_over_the_client(allowed_demo):
    import gradio as gr
    from gradio_client import Client

    from audience.ui.eda import build_eda_tab

    with gr.Blocks() as demo:
        with gr.Tab("EDA", id="eda"):
            build_eda_tab(str(allowed_demo), demo)
    loads = [dep for dep in demo.config["dependencies"] if dep["targets"][0][1] == "load"]
    assert len(loads) == 1 and loads[0]["api_visibility"] == "private"
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(url, verbose=False)
        summary, *plots, noise, grid = client.predict(str(allowed_demo), "bins", "auto", api_name="/eda")
        assert "Synthetic demo data" in summary and len(plots) == len(FIGURE_NAMES)
        assert all(plot["type"] == "plotly" and eda.SYNTHETIC_MARK in plot["plot"] for plot in plots[:6])
        # no exact ages or race in an Adience-layout root: those two panels are hidden
        assert [(plot["visible"], plot["value"]) for plot in plots[6:]] == [(False, None), (False, None)]
        assert noise["headers"] == ["field", "raw", "rows", "bins", "strict"] and noise["data"]
        assert Image.open(grid).size[0] > 0
        # served on loopback: a local run opens the folder, and /etc is no dataset
        summary, *plots, noise, grid = client.predict("/etc", "bins", "auto", api_name="/eda")
        assert "neither an Adience root" in summary and "Traceback" not in summary
        assert not any(isinstance(plot, dict) and plot.get("type") == "plotly" for plot in plots)
    finally:
        demo.close()
