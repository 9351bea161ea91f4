"""The allow-list, the two-head network, offline pretrained errors, local weights and model size."""

from __future__ import annotations

import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import constants as hub_constants

from audience.errors import AudienceError
from audience.labels import TASKS
from audience.model import pretrained
from audience.model.hub_access import PROBE_TIMEOUT_S
from audience.model.network import ARCHS, AgeGenderNet, build_model, count_flops, count_params, model_data_config


@pytest.mark.parametrize(
    ("task", "heads"), [("age+gender", {"age": 8, "gender": 3}), ("age", {"age": 8}), ("gender", {"gender": 3})]
)
def test_tiny_forward_gives_logits_of_the_task_heads(task, heads):
    model = build_model("tiny", task=task).eval()
    size = ARCHS["tiny"]["image_size"]
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert {key: value.shape for key, value in out.items()} == {key: (2, n) for key, n in heads.items()}
    assert model.arch == "tiny" and model.task == task
    assert (model.age is None) == ("age" not in heads) and (model.gender is None) == ("gender" not in heads)


def test_tiny_trains_with_dropout_and_backward():
    model = build_model("tiny", drop_rate=0.2).train()
    out = model(torch.randn(4, 3, 64, 64))
    loss = out["age"].logsumexp(1).mean() + out["gender"].logsumexp(1).mean()
    loss.backward()
    assert model.age.weight.grad is not None and model.backbone.conv_stem.weight.grad is not None


@pytest.mark.parametrize(("arch", "width"), [("mobilenetv3_large_100", 1280), ("resnet50", 2048)])
def test_real_archs_size_heads_from_the_pooled_width(arch, width):
    model = build_model(arch, pretrained=False).eval()
    assert model.feature_width == width
    assert model.age.weight.shape == (8, width) and model.gender.weight.shape == (3, width)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["age"].shape == (1, 8) and out["gender"].shape == (1, 3)


def test_head_width_of_a_backbone_without_timm_attributes_comes_from_a_forward():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    model = AgeGenderNet(backbone, arch="custom", task="age")
    assert model.feature_width == 5 and model(torch.randn(2, 3, 16, 16))["age"].shape == (2, 8)


def test_allow_list_entries_are_complete():
    assert TASKS == ("age+gender", "age", "gender")
    assert {"mobilenetv3_large_100", "resnet50", "tiny"} <= set(ARCHS)
    for spec in ARCHS.values():
        assert spec["timm_name"] in timm.list_models() and spec["label"] and spec["image_size"] >= 32


@pytest.mark.parametrize(
    ("kwargs", "allowed"),
    [({"arch": "vgg16"}, "mobilenetv3_large_100, resnet50, tiny"), ({"arch": "tiny", "task": "race"}, "age+gender")],
)
def test_unknown_arch_or_task_names_the_allowed_values(kwargs, allowed):
    with pytest.raises(AudienceError, match=allowed.replace("+", r"\+")):
        build_model(**kwargs)


def test_pretrained_offline_fails_fast_and_says_what_to_do(monkeypatch, connections):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AudienceError) as caught:
        build_model("mobilenetv3_large_100", pretrained=True)
    assert connections == []  # fast: the network is not tried (a 5 s wall-clock bound failed under load)
    message = str(caught.value)
    assert "--weights" in message and "--no-pretrained" in message and "mobilenetv3_large_100" in message


def test_pretrained_without_a_connection_fails_fast(monkeypatch, connections):
    monkeypatch.setattr(pretrained, "hub_offline", lambda: False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)  # the probe prefers it to the endpoint set below
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    # Port 9 on localhost: nothing listens, so the probe is refused at once.
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    offline_setting = hub_constants.HF_HUB_OFFLINE
    with pytest.raises(AudienceError, match="no connection to the Hugging Face Hub.*--no-pretrained"):
        build_model("resnet50", pretrained=True)
    assert connections == [(("127.0.0.1", 9), PROBE_TIMEOUT_S)]  # fast: one probe, bounded, then the sentence
    assert hub_constants.HF_HUB_OFFLINE == offline_setting  # nothing process-wide was switched


def test_offline_weights_come_from_the_local_cache_without_a_global_switch(monkeypatch, tmp_path):
    """Offline, a cached download is found with hf_hub_download(local_files_only=True) and loaded strictly."""
    source = timm.create_model("mobilenetv3_large_100", pretrained=False, num_classes=1000)
    cached = tmp_path / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(cached))
    asked = []

    def fake_download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename, kwargs))
        assert hub_constants.HF_HUB_OFFLINE == offline_setting  # no process-wide flip around the lookup
        return str(cached)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pretrained, "hf_hub_download", fake_download)
    offline_setting = hub_constants.HF_HUB_OFFLINE
    model = build_model("mobilenetv3_large_100", pretrained=True)
    assert asked == [("timm/mobilenetv3_large_100.ra_in1k", "model.safetensors", {"local_files_only": True})]
    name = next(k for k in source.state_dict() if k.startswith("conv_stem"))
    assert torch.equal(model.backbone.state_dict()[name], source.state_dict()[name])


def test_tiny_has_no_pretrained_weights():
    with pytest.raises(AudienceError, match="no pretrained weights"):
        build_model("tiny", pretrained=True)


@pytest.fixture(scope="module")
def imagenet_tiny() -> torch.nn.Module:
    """The tiny timm model with a 1000-class classifier, standing in for an ImageNet checkpoint."""
    torch.manual_seed(1)
    return timm.create_model(ARCHS["tiny"]["timm_name"], num_classes=1000)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_loads_the_backbone_and_drops_the_classifier(tmp_path, imagenet_tiny, suffix):
    path = tmp_path / f"imagenet{suffix}"
    state = imagenet_tiny.state_dict()
    if suffix == ".pth":
        torch.save(state, path)
    else:
        safetensors.torch.save_file(state, path)
    model = build_model("tiny", weights_file=path)
    assert torch.equal(model.backbone.conv_stem.weight, imagenet_tiny.conv_stem.weight)
    assert torch.equal(model.backbone.bn2.running_var, imagenet_tiny.bn2.running_var)
    assert "classifier.weight" not in model.backbone.state_dict()


def test_weights_file_problems_name_the_file(tmp_path, imagenet_tiny):
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(AudienceError, match="absent.safetensors does not exist"):
        build_model("tiny", weights_file=missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(AudienceError, match="corrupt.pth is not a readable"):
        build_model("tiny", weights_file=corrupt)
    truncated = tmp_path / "truncated.safetensors"
    safetensors.torch.save_file(imagenet_tiny.state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(AudienceError, match="truncated.safetensors is not a readable"):
        build_model("tiny", weights_file=truncated)
    # Weights of another network must not leave a silent random init.
    other = tmp_path / "other.safetensors"
    safetensors.torch.save_file(timm.create_model("test_resnet").state_dict(), other)
    with pytest.raises(AudienceError, match="other.safetensors does not hold ImageNet weights for test_efficientnet"):
        build_model("tiny", weights_file=other)


def test_mobilenetv3_size_matches_the_published_numbers():
    model = build_model("mobilenetv3_large_100", task="age+gender")
    assert count_params(model) == pytest.approx(4.2e6, rel=0.05)
    assert count_flops(model, 224) == pytest.approx(0.431e9, rel=0.1)
    assert model.training  # counting leaves the mode as it was


def test_flops_grow_with_the_image_area():
    model = build_model("tiny")
    assert count_flops(model, 128) == pytest.approx(4 * count_flops(model, 64), rel=0.05)


def test_model_data_config_comes_from_timm():
    config = model_data_config("mobilenetv3_large_100")
    assert config["image_size"] == 224 and config["interpolation"] == "bicubic"
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406]) and len(config["std"]) == 3
    assert model_data_config("tiny")["image_size"] == ARCHS["tiny"]["image_size"]
    config["mean"][0] = 0.0  # the caller's copy: the cache is not changed
    assert model_data_config("mobilenetv3_large_100")["mean"][0] == pytest.approx(0.485)
    with pytest.raises(AudienceError, match="Unknown architecture"):
        model_data_config("vgg16")
