"""Explore an Adience root: a JSON summary, or a self-contained HTML report, and optionally the label file.

    python -m audience.cli.eda --data ROOT [--policy bins|strict] [--images auto|aligned|faces|none]
                          [--json] [--out eda_report.html] [--labels-out labels.json] [--sample N]
"""

from __future__ import annotations

import argparse
import json
import sys

from audience.data.adience import IMAGE_MODES
from audience.data.formats import read_dataset
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
                        help="image folder to use; 'none' reads the labels only (default: auto)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of a report")
    parser.add_argument("--out", default="eda_report.html", help="HTML report path (default: eda_report.html)")
    parser.add_argument("--labels-out", help="also write the label file {image path: {age_id, gender_id}} here")
    parser.add_argument("--sample", type=_count, default=200,
                        help="how many images to read the size of (default: 200)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # with --json, stdout carries the JSON object alone, so notes go to stderr
    notes = sys.stderr if args.json else sys.stdout
    try:
        data = read_dataset(resolve_data_root(args.data), policy=args.policy, images=args.images)
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
