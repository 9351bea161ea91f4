"""Mirror averaging inside the network (the checkpoint's `flip_average`): every path that runs the network answers
the mean of a face and its mirror image, so a mirrored photo gets the same answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audience.errors import AudienceError
from audience.model.checkpoint import load_checkpoint, read_checkpoint_metadata
from audience.model.network import YEARS_OUTPUT, build_model
from audience.model.runtime import _cache_name, onnx_forward
from audience.predict.predictor import Predictor
from tests.fixtures.checkpoints import save_tiny_checkpoint


def _model(age_head: str = "groups"):
    torch.manual_seed(0)
    return build_model("tiny", "age+gender", age_head=age_head).eval()


@pytest.mark.parametrize("age_head", ["groups", "years"])
def test_a_mirror_averaging_network_answers_a_face_and_its_mirror_alike(age_head):
    model = _model(age_head)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        one_view = model(x)
        model.set_flip_average(True)
        both, mirrored = model(x), model(torch.flip(x, dims=(3,)))
    for head in model.outputs:
        assert torch.allclose(both[head], mirrored[head], atol=1e-5), head
        assert not torch.allclose(both[head], one_view[head], atol=1e-4), head
    # the features are averaged before the heads: for a groups head the age scores are the mean of both views'
    if age_head == "groups":
        model.set_flip_average(False)
        with torch.no_grad():
            mean = (model(x)["age"] + model(torch.flip(x, dims=(3,)))["age"]) / 2
        assert torch.allclose(both["age"], mean, atol=1e-5)
    else:
        assert both[YEARS_OUTPUT].shape == (3, 101)


def test_a_checkpoint_says_whether_its_model_averages_the_mirror(tmp_path):
    on = save_tiny_checkpoint(tmp_path, "on", {"flip_average": True})
    off = save_tiny_checkpoint(tmp_path, "off")
    assert read_checkpoint_metadata(on).flip_average is True and load_checkpoint(on)[0].flip_average
    assert read_checkpoint_metadata(off).flip_average is None and not load_checkpoint(off)[0].flip_average
    data = json.loads(on.read_text())
    data["flip_average"] = "yes"
    on.write_text(json.dumps(data))
    with pytest.raises(AudienceError, match="flip_average"):
        read_checkpoint_metadata(on)


def test_predict_answers_a_mirrored_photo_alike_and_does_not_mirror_twice(tmp_path):
    path = save_tiny_checkpoint(tmp_path, "on", {"flip_average": True}, age_head="years")
    image = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)
    with Predictor(path, runtime="torch") as predictor:
        face = predictor.predict(image, whole_image=True)[0]
        mirror = predictor.predict(np.ascontiguousarray(image[:, ::-1]), whole_image=True)[0]
        asked = predictor.predict(image, whole_image=True, tta_flip=True)[0]
    assert np.allclose(face.age_probs, mirror.age_probs, atol=1e-5)
    assert np.allclose(face.gender_probs, mirror.gender_probs, atol=1e-5)
    assert face.age_years == pytest.approx(mirror.age_years, abs=1e-3)
    assert np.array_equal(face.age_probs, asked.age_probs)  # tta_flip adds nothing the model does not do already


def test_onnx_runtime_runs_the_mirror_average_with_its_own_export(tmp_path):
    pytest.importorskip("onnxruntime")
    model = _model()
    plain = _cache_name(model, ("age", "gender"), 32)
    model.set_flip_average(True)
    assert _cache_name(model, ("age", "gender"), 32) != plain
    forward = onnx_forward(model, ("age", "gender"), 32, threads=1, folder=tmp_path)
    assert forward is not None
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    got = forward(x.numpy())
    assert np.allclose(got["age"], expected["age"].numpy(), atol=1e-4)
    assert np.allclose(forward(torch.flip(x, dims=(3,)).numpy())["gender"], got["gender"], atol=1e-4)


def test_promote_records_mirror_averaging_and_the_card_says_so(tmp_path):
    from audience.publish.model_card import build_model_card
    from audience.publish.promote import promote_checkpoint

    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    save_tiny_checkpoint(run / "fold0", "best", {"arch": "tiny"})
    promoted = promote_checkpoint(run, 0, name="mirror", checkpoints_dir=tmp_path / "models", flip_average=True)
    metadata = read_checkpoint_metadata(promoted)
    assert metadata.flip_average is True
    assert "mirror averaging: each face is also seen mirrored" in build_model_card(metadata, None, "u/m")
    kept = promote_checkpoint(run, 0, name="plain", checkpoints_dir=tmp_path / "models2")
    assert read_checkpoint_metadata(kept).flip_average is None
    assert "mirror averaging: none" in build_model_card(read_checkpoint_metadata(kept), None, "u/m")
