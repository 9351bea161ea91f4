"""Shared fixtures: a synthetic Adience root made once per session, and ../shared when present."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real Adience fold files and 19 real images); tests using it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside the checkout (it holds the real Adience test data)")
    return SHARED


@pytest.fixture(scope="session")
def adience_meta(shared_dir: Path) -> Path:
    path = shared_dir / "adience-meta"
    if not path.is_dir():
        pytest.skip("../shared/adience-meta is not present")
    return path


@pytest.fixture(scope="session")
def adience_sample(shared_dir: Path) -> Path:
    path = shared_dir / "adience-sample"
    if not path.is_dir():
        pytest.skip("../shared/adience-sample is not present")
    return path


@pytest.fixture(scope="session")
def group_photo(shared_dir: Path):
    """25 real UTKFace faces in a grid (tests/fixtures/group_photo.py), an RGB array made in memory."""
    from fixtures.group_photo import utkface_group_photo

    folder = shared_dir / "utkface" / "UTKFace"
    if not folder.is_dir():
        pytest.skip("../shared/utkface/UTKFace is not present")
    return utkface_group_photo(folder)


@pytest.fixture
def unmeasured_framing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training measures its images' framing with the face detector (faces.align.measure_framing) before the
    first fold; tests that train in-process on synthetic faces skip that pass and keep the default framing.
    The framing itself is tested in test_align.py, test_crop_geometry.py and test_utkface.py."""
    import audience.train.cross_validate

    monkeypatch.setattr(audience.train.cross_validate, "measure_framing", lambda paths: {})


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic demo dataset, made once per test session (read-only for tests: copy to change it)."""
    from audience.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo-data", seed=0)


@pytest.fixture(scope="session", autouse=True)
def _session_models_dir(tmp_path_factory: pytest.TempPathFactory):
    """AUDIENCE_MODELS in a temporary folder for the whole session (servers and scripts started by fixtures
    inherit it): no test writes a model or the default-model choice into the project's models/."""
    previous = os.environ.get("AUDIENCE_MODELS")
    os.environ["AUDIENCE_MODELS"] = str(tmp_path_factory.mktemp("user-models"))
    yield
    if previous is None:
        os.environ.pop("AUDIENCE_MODELS", None)
    else:
        os.environ["AUDIENCE_MODELS"] = previous


@pytest.fixture(autouse=True)
def _own_models_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test its own models folder (not made until used): a model promoted or a default chosen by one test
    is not served to the next."""
    monkeypatch.setenv("AUDIENCE_MODELS", str(tmp_path_factory.getbasetemp() / "models" / str(next(_MODELS_NUMBERS))))


_MODELS_NUMBERS = itertools.count()


@pytest.fixture(scope="session")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-subject demo dataset (the smallest allowed): every fold, class and kind of label noise, few images.

    The training tests and the command lines run on it; it is shared, so a test that changes files copies it first.
    """
    from audience.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("small") / "demo", seed=0, n_subjects=60)


