"""A graceful stop of the server: SIGTERM (what a Space or `docker stop` sends on every restart) ends the app
as Ctrl-C does, and either one stops the training run at a safe point before the process exits.

Without this a SIGTERM killed the process at once: the run stayed "running" with its lock and half an epoch
lost, and the uploads stayed on disk. Now the server stops taking requests, the run ends after its current
batch (status "stopped", resumable; its lock released), this process's uploads are deleted, then it exits.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from audience import settings

log = logging.getLogger(__name__)


def install_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread, where gradio's launch() stops the server as for
    Ctrl-C and returns; a second SIGTERM while stopping ends the process at once."""
    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, lambda *_: os._exit(128 + signal.SIGTERM))
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def shut_down(demo) -> None:
    """After launch() returned: stop the training job at a safe point (waiting at most
    settings.shutdown_wait_seconds()), release every run this process owns, delete this process's uploads."""
    from audience.train import job as jobs
    from audience.train.run_lock import release_all_runs
    from audience.ui.uploads import delete_own_uploads

    status = jobs.job_status(tail=0)
    if status.active:
        print(f"stopping training run {status.run_id or '(starting)'} after its current batch", file=sys.stderr,
              flush=True)
        jobs.stop_job()
        status = jobs.wait_job(settings.shutdown_wait_seconds())
    if status.active:  # its lock goes with the process (the kernel drops the flock); the run reads "interrupted"
        print("the training run did not stop in time; it will show as interrupted (resume it later)",
              file=sys.stderr, flush=True)
    else:
        release_all_runs()
    try:
        delete_own_uploads(demo)
    except Exception as error:  # noqa: BLE001 - the process ends anyway; say why files stayed
        log.warning("could not delete the uploads: %s", error)
