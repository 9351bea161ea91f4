"""The app as a whole: what it keeps and for how long."""

from __future__ import annotations

from fixtures.waiting import HANG_S


def test_uploads_are_deleted_after_a_short_time(monkeypatch):
    import app

    monkeypatch.setenv("AUDIENCE_KEEP_FILES_S", "120")
    assert app.build_demo().delete_cache == (60, 120)  # every minute, files older than two minutes
    monkeypatch.setenv("AUDIENCE_KEEP_FILES_S", "forever")
    assert app.build_demo().delete_cache == (60, 600)


def test_a_foreign_demo_folder_stops_the_app_with_one_sentence(tmp_path):
    """A non-empty demo folder that holds something else is never overwritten: the app says so and exits."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    home = tmp_path / "home"
    (home / "demo-data").mkdir(parents=True)
    (home / "demo-data" / "notes.txt").write_text("mine")
    env = {**os.environ, "AUDIENCE_HOME": str(home), "GRADIO_SERVER_PORT": "1"}
    env.pop("AUDIENCE_DATA", None)
    app_py = Path(__file__).resolve().parents[1] / "app.py"
    done = subprocess.run([sys.executable, str(app_py)], env=env, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("Audience cannot start:") and "demo-data" in done.stderr
    assert (home / "demo-data" / "notes.txt").read_text() == "mine"


def test_pyplot_is_imported_before_any_event_runs():
    """gradio's matplotlib.use() around each event fails while a handler or training thread is half-way
    through importing pyplot (mediapipe's vision package does); the UI imports it first, in one thread."""
    import subprocess
    import sys

    code = ("import sys; import audience.ui.train; "
            "print('matplotlib.pyplot' in sys.modules, 'mediapipe.tasks.python.vision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]


# Imported where a model is built, trained, loaded or measured, never to show the first page (issue 19's cold start:
# torch alone took about 1.2 s of the app's 3.8 s import at load 5, timm about 4 s more).
DEFERRED_IMPORTS = ("torch", "torchvision", "timm", "sklearn", "albumentations", "onnxruntime", "mediapipe",
                    "safetensors")
WHO_IMPORTS = """
import json, sys, traceback

class Watch:
    found = {}

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in DEFERRED and top not in self.found:
            frames = [f"{frame.filename.rpartition('/')[2]}:{frame.lineno}" for frame in traceback.extract_stack()
                      if "audience" in frame.filename or frame.filename.endswith("app.py")]
            self.found[top] = " <- ".join(reversed(frames[-6:]))
        return None  # the real finders import it as usual

DEFERRED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Watch())
import app

app.build_demo()
print(json.dumps({name: where for name, where in Watch.found.items() if name in sys.modules}))
"""


def test_the_app_starts_without_torch_timm_or_sklearn(tmp_path, demo_root):
    """Importing app.py and building its pages loads none of the libraries a model needs; a tab imports them
    when it first trains, loads or measures one. The message names the import chain that broke this."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from audience.ui.train import GPU_DRIVER_PATHS

    env = {**os.environ, "AUDIENCE_HOME": str(tmp_path / "home"), "AUDIENCE_DATA": str(demo_root),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    deferred = DEFERRED_IMPORTS
    if sys.platform != "linux" or any(Path(path).exists() for path in GPU_DRIVER_PATHS):
        deferred = tuple(name for name in deferred if name != "torch")  # the Train tab asks torch how many GPUs
    done = subprocess.run([sys.executable, "-c", WHO_IMPORTS, ",".join(deferred)], env=env,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == {}, "imported at the app's start:\n" + "\n".join(f"{k}: {v}" for k, v in imported.items())


def test_the_demo_data_are_made_on_first_use_not_before_the_first_page(tmp_path, monkeypatch):
    """A fresh AUDIENCE_HOME: the app's start only names the demo folder (making it took about 2 s of the cold
    start); the EDA tab's first load, which opens that folder, makes it."""
    from pathlib import Path

    import app
    from audience.ui.eda import run_eda

    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AUDIENCE_DATA", raising=False)
    root = Path(app.default_data_root())
    assert root == tmp_path / "home" / "demo-data" and not root.exists()
    summary = run_eda(str(root), "bins", "auto")[0]
    assert (root / "fold_0_data.txt").is_file() and "demo" in summary.lower(), summary
