"""Cold start of the app as `make run` starts it: seconds from process start to the first HTTP 200.

Starts `python app.py` (and, to compare, a minimal gradio app of one Textbox) on a free loopback port
with its own temporary AUDIENCE_HOME, runs and checkpoints folders unless told otherwise, polls the
page every 50 ms and notes when the process printed its URL; the machine's load average is recorded
beside the figure (docs/measurements.md).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from audience.errors import AudienceError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.05


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


# gradio's launch() takes its address and port from GRADIO_SERVER_NAME and GRADIO_SERVER_PORT, as app.py is given them
MINIMAL_APP = """import gradio as gr

with gr.Blocks() as demo:
    gr.Textbox()

if __name__ == "__main__":
    demo.launch()
"""


def measure_against_minimal(timeout_s: float = 180.0, keep_home: bool = False, rounds: int = 1) -> dict:
    """Cold starts of app.py and of a minimal gradio app (one Textbox) started the same way, in turns
    (minimal, app, minimal, app, ...: the same machine and load), with the ratio of their medians.

    The ratio is what issue 19 set a target for (at most 1.5): what the app adds to gradio's own start."""
    app, minimal = [], []
    with tempfile.TemporaryDirectory(prefix="audience-minimal-app-") as folder:
        script = Path(folder) / "minimal_app.py"
        script.write_text(MINIMAL_APP)
        for _ in range(max(1, rounds)):
            minimal.append(measure_cold_start(timeout_s, keep_home, script=script))
            app.append(measure_cold_start(timeout_s, keep_home))
    app_s = round(statistics.median(run["first_200_s"] for run in app), 2)
    minimal_s = round(statistics.median(run["first_200_s"] for run in minimal), 2)
    return {"app": app, "minimal_gradio_app": minimal, "app_first_200_s": app_s, "minimal_first_200_s": minimal_s,
            "ratio": round(app_s / minimal_s, 2), "cores": os.cpu_count()}


def measure_cold_start(timeout_s: float = 180.0, keep_home: bool = False, script: Path | None = None) -> dict:
    """{"first_200_s", "url_printed_s", "load_before", "load_after", "cores"} for one start of app.py
    (or of `script`, started the same way).

    `keep_home`: use the caller's AUDIENCE_HOME (a demo dataset made already) instead of a fresh one, whose
    first start also makes the synthetic demo data. Raises AudienceError when the app exits or never answers.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="audience-cold-start-") as scratch:
        env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               "AUDIENCE_RUNS": str(Path(scratch) / "runs")}
        if not keep_home:
            env["AUDIENCE_HOME"] = str(Path(scratch) / "home")
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, str(script or "app.py")], cwd=PROJECT_ROOT, env=env,
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        printed: list[float] = []

        def watch() -> None:
            for line in process.stdout:
                if url.rstrip("/") in line and not printed:
                    printed.append(time.perf_counter() - started)

        threading.Thread(target=watch, daemon=True).start()
        try:
            while not _answers(url):
                if process.poll() is not None:
                    raise AudienceError(f"{Path(script or 'app.py').name} exited with code {process.returncode} "
                                        "before it served a page.")
                if time.perf_counter() - started > timeout_s:
                    raise AudienceError(f"{Path(script or 'app.py').name} served no page within {timeout_s:.0f} s.")
                time.sleep(POLL_S)
            first = time.perf_counter() - started
            deadline = time.perf_counter() + 5
            while not printed and time.perf_counter() < deadline:
                time.sleep(POLL_S)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    return {"first_200_s": round(first, 2), "url_printed_s": round(printed[0], 2) if printed else None,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(), "fresh_home": not keep_home}
