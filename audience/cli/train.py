"""Train and cross-validate an age/gender model into a run folder.

    python -m audience.cli.train --data ROOT --arch mobilenetv3_large_100 --folds all --epochs 10
    python -m audience.cli.train --preset demo                  # the demo recipe on the synthetic data
    python -m audience.cli.train --preset demo --epochs 3       # the recipe, with a flag overriding it
    python -m audience.cli.train --resume runs/20261126-101500-tiny-folds   # continue a stopped run
    torchrun --nproc_per_node 2 -m audience.cli.train --data ROOT ...      # data parallel (--parallel-folds: folds)

Every setting of audience.train.config.TrainConfig is a flag (see --help). Ctrl-C stops after the
current batch, keeping the files of the last completed epoch; a second Ctrl-C aborts.

Exit status: 0 done, 130 stopped or aborted, 2 a problem with the input (one `error:` sentence),
1 an internal error (one line; the traceback is in the run's train.log, and on stderr with --debug
or AUDIENCE_DEBUG=1).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from audience import settings
from audience.errors import AudienceError
from audience.train.config import DEMO_RECIPE, SETTING_OF, TrainConfig, add_config_arguments, config_from_args
from audience.train.runs import COMMAND_FILE

PRESETS: dict[str, dict] = {"demo": DEMO_RECIPE}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train an age/gender model with cross-validation over the Adience folds.",
        epilog="Accuracies are reported as fractions of the held-out test fold(s).",
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run with its saved settings")
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="start from a recipe: 'demo' is the Train tab's demo preset (tiny network, fold 0, "
                             "64 px, 15 epochs on the synthetic demo data); flags given explicitly override it")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, only the summary lines")
    parser.add_argument("--clear-cache", action="store_true",
                        help="delete the decoded-image caches (of --cache-dir, default AUDIENCE_HOME/image-cache) and "
                             "exit; they are rebuilt when needed (AUDIENCE_CACHE_GB caps their size, default 8)")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an internal error to stderr (also AUDIENCE_DEBUG=1)")
    add_config_arguments(parser)
    return parser


class _Progress:
    """Turns training events into tqdm bars (one per epoch) and printed lines.

    The bars are drawn only on a terminal: redirected to a file (`> train.out 2>&1`, nohup, a CI log) they
    would fill it with carriage-return redraws; the epoch lines say the same there."""

    def __init__(self, quiet: bool, command: str = "", program: str = ""):
        self.quiet, self.bar, self.command = quiet or not sys.stderr.isatty(), None, command
        self.program = program  # how this command was started: the resume hints name it so
        self.run_dir: str | None = None  # known from run_start on, for pointing at its train.log

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        self.run_dir = event.get("run_dir") or self.run_dir
        if event["type"] == "run_start" and self.command:
            record_command(Path(event["run_dir"]), self.command)
        if event["type"] == "batch":
            if self.quiet:
                return
            if self.bar is None or event["step"] == 1:
                self._close()
                self.bar = tqdm(total=event["steps"], desc=f"fold {event['fold']} epoch {event['epoch']}/"
                                f"{event['epochs']}", unit="batch", leave=False, dynamic_ncols=True)
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.3f}", img_s=f"{event['images_per_s']:.0f}")
            return
        self._close()
        # An error's sentence is printed once, by main(), from the exception.
        if event.get("message") and event["type"] != "error":
            message = str(event["message"])
            tqdm.write(message.replace(MODULE, self.program) if self.program else message)


def record_command(run_dir: Path, command: str) -> None:
    """Append the command line to the run's command.txt (a resume adds a line), so a model card can quote it."""
    try:
        with open(run_dir / COMMAND_FILE, "a", encoding="utf-8") as file:
            file.write(command + "\n")
    except OSError:  # a record, not the run: training goes on without it
        pass


def internal_error_line(error: Exception, debug: bool, run_dir: str | None) -> str:
    """The one line printed for an unexpected exception (the traceback goes to stderr first when debugging)."""
    debug = debug or settings.debug_enabled()
    if debug:
        traceback.print_exc(file=sys.stderr)
    text = " ".join(str(error).split())[:200]
    where = f"details in {Path(run_dir) / 'train.log'}" if run_dir and (Path(run_dir) / "train.log").is_file() \
        else "run again with --debug to see the traceback"
    return f"error: internal error ({type(error).__name__}: {text}); {where}"


def config_of(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the flags, over the preset's recipe when --preset is given (flags win)."""
    if not args.preset:
        return config_from_args(args)
    given = {name: value for name, value in vars(args).items() if name in SETTING_OF}
    return TrainConfig.from_dict({**PRESETS[args.preset], **given})


def install_stop_handlers(stop: threading.Event):
    """Ctrl-C sets `stop` (a second one aborts); under torchrun, SIGTERM (torchrun stopping the survivors of a
    failed process) ends the run with a sentence. Returns the function that puts the old handlers back."""
    from audience.train import distributed

    under_torchrun = distributed.launched()
    first_interrupt: list[float] = []

    def on_interrupt(signum, frame):
        # Under torchrun a Ctrl-C arrives twice (from the terminal and forwarded by torchrun): the echo is not
        # a second press.
        if stop.is_set() and under_torchrun and time.monotonic() - first_interrupt[0] < 3:
            return
        if stop.is_set():
            raise KeyboardInterrupt
        first_interrupt.append(time.monotonic())
        stop.set()
        print("\nstopping after the current batch (press Ctrl-C again to abort now)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    previous_term = signal.signal(signal.SIGTERM, distributed.terminated) if under_torchrun else None

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)

    return restore


def given_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The settings given as flags; a usage error when --resume comes with any (it uses the run's own)."""
    given = {k: v for k, v in vars(args).items() if k not in ("resume", "quiet", "debug", "preset", "clear_cache")}
    if args.resume and args.preset:
        parser.error("--resume uses the run's saved settings; drop --preset")
    if args.resume and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        parser.error(f"--resume uses the run's saved settings; drop {flags}")
    return given


# How this command is run by default: as a module (a file that wraps it passes its own path instead).
MODULE = "-m audience.cli.train"


def command_line(argv: list[str] | None, program: str = MODULE) -> str:
    """This command as a user would type it again (with torchrun's process count under torchrun)."""
    from audience.train import distributed

    launcher = ["python"] if not distributed.launched() else \
        ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", "1")]
    return shlex.join([*launcher, *program.split(), *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None, program: str = MODULE) -> int:
    """The command line; `program` is how it was started ('-m audience.cli.train' or a wrapper's path), for the
    command record and the resume hint."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.clear_cache:
        from audience.data.cache import clear_caches, describe_bytes

        folder = getattr(args, "cache_dir", None)
        print(f"freed {describe_bytes(clear_caches(folder))} of image caches")
        return 0
    given = given_settings(parser, args)
    stop = threading.Event()
    restore_signals = install_stop_handlers(stop)
    from audience.train import distributed
    from audience.train.cross_validate import cross_validate, resume

    progress = _Progress(args.quiet, command_line(argv, program), program)
    try:
        if args.resume:
            run_dir = resume(args.resume, on_event=progress, stop=stop)
        else:
            if "data" not in given and not args.preset:
                parser.error("--data is required (an Adience root, or 'demo' for the synthetic demo dataset; "
                             "or --preset demo)")
            run_dir = cross_validate(config_of(args), on_event=progress, stop=stop)
    except AudienceError as error:
        progress._close()
        message = str(error)
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
        return 2
    except distributed.GroupFailure as error:  # torchrun stopped this process while it was failing already
        progress._close()
        run_dir = progress.run_dir or args.resume
        print(f"error: {error}" + (f"; continue with: torchrun ... {program} --resume {run_dir}" if run_dir
                                   else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress._close()
        print("error: aborted; the files of the last completed epoch are kept.", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a bug: one line for the user, the traceback for a report
        progress._close()
        run_dir = progress.run_dir or args.resume
        print(internal_error_line(error, args.debug, run_dir), file=sys.stderr)
        return 1
    finally:
        restore_signals()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(f"run folder: {run_dir}")
    return 130 if stop.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
