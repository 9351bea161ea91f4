"""Explore an Adience root: a JSON summary, or a self-contained HTML report, and optionally the label file.

    python -m audience.cli.eda --data ROOT [--policy bins|strict] [--images auto|aligned|faces|none]
                          [--json] [--out eda_report.html] [--labels-out labels.json] [--sample N]
"""

from __future__ import annotations

import argparse
import json
import sys

from audience.data.adience import IMAGE_MODES, image_folder_of
from audience.data.formats import images_to_explore, read_dataset
from audience.data.roots import resolve_data_root
from audience.eda.report import build_eda, write_label_file, write_report
from audience.eda.tables import summarize
from audience.errors import AudienceError
from audience.labels import POLICIES


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Adience root (fold_0_data.txt ... fold_4_data.txt + images)")
    parser.add_argument("--policy", choices=POLICIES, default="bins", help="age label policy (default: bins)")
    parser.add_argument("--images", choices=IMAGE_MODES, default="auto",
                        help="image folder to use; 'none' reads the labels only (default: auto: aligned/, else "
                             "faces/, else the labels only, as the EDA tab does)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of a report")
    parser.add_argument("--out", default="eda_report.html", help="HTML report path (default: eda_report.html)")
    parser.add_argument("--labels-out", help="also write the label file {image path: {age_id, gender_id}} here")
    parser.add_argument("--sample", type=_count, default=200,
                        help="how many images to read the size of (default: 200)")
    return parser.parse_args(argv)


def _no_label_file(typed: str, has_images: bool) -> str:
    """Why --labels-out cannot be written with no images read, and the one way forward."""
    if has_images:
        return ("--labels-out lists image paths, but --images none reads no images; use --images auto, aligned "
                "or faces with --labels-out.")
    return (f"--labels-out lists image paths, and {typed} has no images (neither aligned/ nor faces/): leave out "
            "--labels-out to explore its labels, or point --data at a root with images.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # with --json, stdout carries the JSON object alone, so notes go to stderr
    notes = sys.stderr if args.json else sys.stdout
    try:
        root = resolve_data_root(args.data)
        images = images_to_explore(root, args.images)
        if images == "none" and args.labels_out:
            raise AudienceError(_no_label_file(args.data, has_images=image_folder_of(root) is not None))
        data = read_dataset(root, policy=args.policy, images=images)
        if images != args.images:  # as the EDA tab does: a labels-only root is explored, not refused
            # said once its labels were read: a root whose labels are bad gets only the one error sentence
            print(f"note: {args.data} has neither aligned/ nor faces/: reading its labels only (images 'none'); "
                  "image sizes and sample faces need a root with images.", file=notes)
        if args.labels_out:
            count = write_label_file(data, args.labels_out)
            print(f"wrote {count} labels to {args.labels_out}", file=notes)
        if args.json:
            print(json.dumps(summarize(data)))
        else:
            path = write_report(build_eda(data, sample=args.sample), args.out)
            print(path)
    except AudienceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a fold file or image folder without read permission
        print(f"error: {exc.filename or args.data}: cannot be read ({exc.strerror or exc}).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
