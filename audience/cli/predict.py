"""Predict age group and gender of every face in images and folders.

    python -m audience.cli.predict photo.jpg folder/ clip.mp4 [--checkpoint FILE] [--json] [--out DIR]
                              [--whole-image] [--tta] [--detector mediapipe|haar] [--max-faces N] [--fps R]

Default checkpoint: the default model, as in the Predict tab (the one you last made the default
with "Use this model" or "Make default", else the shipped real model in checkpoints/); without one,
faces are only detected. --json prints one JSON object per image and line on stdout (progress and
notes go to stderr). Exit code: 0 when every image was read, 1 when any failed (the last line says
how many), 2 for a usage error (no images, unreadable checkpoint).

A video file named on the command line (MP4, WebM, MOV, MKV, AVI; a GIF stays a photo: its first frame) is
analysed at --fps frames per second (0: every frame): faces are tracked through it and each track's labels
smoothed (audience.predict.video). It prints one line per track; with --json, one JSON object per analysed frame
({"video", "frame", "time_s", "faces": [{"track", ...the photo's face fields}]}) and then one with the video's
"tracks" (the per-track summary), or one {"video", "error"} when it cannot be read. --out writes its annotated
video (VP8 WebM) there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from audience.cli.arguments import whole_number
from audience.data.images import list_images
from audience.errors import AudienceError
from audience.faces.detector import FaceDetector
from audience.model.catalog import find_default_checkpoint, read_default_choice
from audience.predict.batch import predict_files
from audience.predict.predictor import NO_FACE_NOTE, Predictor
from audience.predict.video import DEFAULT_RATE, VIDEO_SUFFIXES

MAX_FACES = 20
MAX_FACES_LIMIT = 500  # each face is a crop in one forward pass: bounded like every other input


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, folders (searched recursively for images) and video files")
    parser.add_argument(
        "--checkpoint", type=Path, help="a checkpoint .json/.safetensors (default: the Predict tab's default model)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image and line on stdout")
    parser.add_argument("--out", type=Path, help="write annotated images to this folder")
    parser.add_argument("--whole-image", action="store_true", help="each image is already a face crop: no detection")
    parser.add_argument("--tta", action="store_true", help="average with the mirrored crop (twice the compute)")
    parser.add_argument("--detector", choices=("mediapipe", "haar"), default="mediapipe", help="face detector backend")
    parser.add_argument("--max-faces", type=whole_number(1, MAX_FACES_LIMIT, "between {low} and {high}"),
                        default=MAX_FACES, metavar="N",
                        help=f"classify at most the N largest faces per image ({MAX_FACES}; at most {MAX_FACES_LIMIT})")
    parser.add_argument("--fps", type=frame_rate, default=DEFAULT_RATE, metavar="R",
                        help=f"frames analysed per second of a video ({DEFAULT_RATE:g}; 0: every frame)")
    return parser.parse_args(argv)


def frame_rate(text: str) -> float:
    """--fps: 0 (every frame) or a positive, finite number of frames per second."""
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0 <= rate < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (every frame) or a positive number of frames per second, "
                                         f"not {text!r}")
    return rate


def _is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES and Path(path).suffix.lower() != ".gif"


def predict_video_file(path: str, predictor: Predictor, args: argparse.Namespace) -> bool:
    """Analyse one video: print its tracks (or JSON Lines); False when it could not be read (said on stderr)."""
    from audience.predict.video import VideoResult, analyse_video
    from audience.predict.video_report import describe_summary, track_summary

    rate = None if args.fps == 0 else args.fps
    annotated = None if args.out is None else args.out / f"{Path(path).stem}-tracked.webm"
    result = VideoResult(None, rate)
    try:
        if annotated is not None:
            args.out.mkdir(parents=True, exist_ok=True)
        printed = 0
        for _ in analyse_video(path, predictor, rate, annotated=annotated, name=Path(path).name, result=result):
            if args.json:  # each analysed frame as soon as it is done
                for frame in result.frames[printed:]:
                    faces = [{"track": face.track, **face.shown.to_dict()} for face in frame.faces]
                    print(json.dumps({"video": path, "frame": frame.frame, "time_s": round(frame.time_s, 3),
                                      "faces": faces}, allow_nan=False), flush=True)
                printed = len(result.frames)
    except (AudienceError, OSError) as error:
        if args.json:  # as a photo that cannot be read: a record with its error
            print(json.dumps({"video": path, "error": str(error)}), flush=True)
        else:
            print(f"{path}: error: {error}")
        return False
    summary = track_summary(result)
    if args.json:
        print(json.dumps({"video": path, "tracks": summary, "note": result.note}, allow_nan=False), flush=True)
    else:
        how = "every frame" if rate is None else f"{rate:g} frames/s"
        head = (f"{path}: {len(summary)} track{'s' if len(summary) != 1 else ''} in {len(result.frames)} frames "
                f"analysed ({how})")
        print("\n".join([head + (f" ({result.note})" if result.note else ""), *describe_summary(summary)]))
    if annotated is not None and annotated.exists():
        print(f"annotated video: {annotated}", file=sys.stderr)
    return True



def _describe(record: dict) -> str:
    if "error" in record:
        return f"{record['image']}: error: {record['error']}"
    faces = record["faces"]
    if not faces:
        return f"{record['image']}: {NO_FACE_NOTE} (--whole-image)"
    lines = [f"{record['image']}: {len(faces)} face{'s' if len(faces) != 1 else ''}"]
    if record.get("note"):
        lines[0] += f" ({record['note']})"
    for number, face in enumerate(faces, 1):
        parts = [f"box {tuple(face['box'])}"]
        if face["score"] is not None:
            parts.append(f"score {face['score']:.2f}")
        for head in ("age", "gender"):
            if face[head] is not None:
                years = f", about {face[head]['years']:.0f}" if face[head].get("years") is not None else ""
                parts.append(f"{head} {face[head]['label']}{years} ({max(face[head]['probs'].values()):.2f})")
        if face["uncertain"]:
            parts.append("uncertain")
        lines.append(f"  face {number}: " + ", ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        videos = [path for path in args.paths if _is_video(path)]
        images = list_images([path for path in args.paths if not _is_video(path)], recursive=True)
        if not images and not videos:
            raise AudienceError(f"No images found in {', '.join(args.paths)}.")
        checkpoint = args.checkpoint or find_default_checkpoint()
        detector = FaceDetector(backend=args.detector)
        predictor = Predictor(checkpoint, detector=detector, max_faces=args.max_faces)
    except AudienceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if checkpoint is None:
        print(f"note: {predictor.note}", file=sys.stderr)
    else:
        print(f"checkpoint: {checkpoint}", file=sys.stderr)
        if predictor.note:
            chosen = (" (it is the default model because you chose it with 'Use this model' or 'Make default')"
                      if args.checkpoint is None and checkpoint.name == read_default_choice() else "")
            print(f"note: {predictor.note}{chosen}", file=sys.stderr)
    succeeded = failed = 0
    for video in videos:
        ok = predict_video_file(video, predictor, args)
        succeeded, failed = succeeded + ok, failed + (not ok)
    progress = tqdm(images, unit="image", file=sys.stderr, disable=len(images) < 2 or not sys.stderr.isatty())
    try:
        for record in predict_files(progress, predictor, args.out, args.whole_image, args.tta):
            succeeded += "error" not in record
            failed += "error" in record
            if args.json:
                print(json.dumps(record, allow_nan=False), flush=True)
                if record.get("note"):
                    print(f"note: {record['image']}: {record['note']}", file=sys.stderr)
                if record.get("faces") == []:
                    print(f"note: {record['image']}: {NO_FACE_NOTE} (--whole-image)", file=sys.stderr)
            else:
                progress.write(_describe(record), file=sys.stdout)
    except AudienceError as error:  # e.g. the --out folder is not writable
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        progress.close()
        predictor.close()
        detector.close()
    if failed:
        what = "file" if videos else "image"
        print(f"error: {failed} of {succeeded + failed} {what}{'s' if succeeded + failed != 1 else ''} could not be "
              "read (see the lines above); the others were predicted.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
