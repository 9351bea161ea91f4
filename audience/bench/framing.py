"""A checkpoint's framing (crop geometry and alignment) measured again with the face detector of today.

A checkpoint records where its training faces sit relative to the detector's box (`faces.align.measure_framing`,
run by the trainer), so that Predict cuts a face the way the model saw it. That record belongs to the detector
that measured it: when the detector's boxes move (issue 19's close-ups moved them by about 1 % of their size),
the framing is measured again on the same fixed sample of training images.

`python -m audience.cli.benchmark framing --checkpoint CKPT [--data ROOT] [--write]` finds the training images
from the checkpoint's `train_config`, measures, prints the recorded and the measured framing, and with `--write`
stores the measurement in the checkpoint JSON (`crop`, `alignment`); the weights are untouched.
"""

from __future__ import annotations

from pathlib import Path

from audience.errors import AudienceError
from audience.faces.align import measure_framing
from audience.files import write_json_atomic
from audience.model.checkpoint import checkpoint_paths, read_checkpoint_metadata
from audience.model.metadata import check_checkpoint_metadata
from audience.train.prepare import checkpoint_config, read_data

__all__ = ["framing_lines", "measure_checkpoint_framing"]

FIELDS = ("margin", "shift_x", "shift_y")


def measure_checkpoint_framing(checkpoint: str | Path, data: str | Path | None = None, write: bool = False) -> dict:
    """{"checkpoint", "data", "recorded": {"crop", "alignment"} as the checkpoint has them, "measured": the same
    measured now}; with `write`, the checkpoint JSON gets the measured ones (`written`: its path)."""
    path = checkpoint_paths(checkpoint)[1]
    metadata = read_checkpoint_metadata(path)
    config = checkpoint_config(checkpoint, metadata, data)
    dataset = read_data(config)
    measured = measure_framing(dataset.faces["path"].dropna().astype(str).tolist())
    recorded = {"crop": metadata.crop, "alignment": metadata.alignment}
    result = {"checkpoint": str(checkpoint), "data": config.data, "measured": measured,
              "recorded": {key: None if block is None else block.as_dict() for key, block in recorded.items()}}
    if write:
        if measured["crop"] is None:
            raise AudienceError(f"No face was found in the sampled training images of {config.data}, so the "
                                f"framing of {path.name} was left as it is.")
        # the JSON as read, with these two blocks replaced (the other keys keep their places)
        updated = {**metadata.as_json(), "crop": measured["crop"], "alignment": measured["alignment"]}
        if measured["alignment"] is None:  # faces no longer level: Predict must not turn them
            del updated["alignment"]
        check_checkpoint_metadata(updated, str(path))
        write_json_atomic(path, updated)
        result["written"] = str(path)
    return result


def framing_lines(result: dict) -> list[str]:
    """The report as text: the crop geometry and the eyes' place, as recorded and as measured now."""
    def describe(framing: dict) -> str:
        crop, alignment = framing.get("crop"), framing.get("alignment")
        text = "no face found" if not crop else (
            ", ".join(f"{key} {crop[key]:+.4f}" for key in FIELDS) + f" (on {crop.get('measured_on')} images; "
            f"detector: {crop.get('detector', 'not recorded')})")
        if alignment:
            text += f"; level, eyes at x {alignment.get('eye_x')}, y {alignment.get('eye_y')}"
        return text

    lines = [f"{result['checkpoint']}: framing of its training images ({result['data']})",
             f"recorded: {describe(result['recorded'])}", f"measured: {describe(result['measured'])}"]
    if "written" in result:
        lines.append(f"written to {result['written']}")
    return lines
