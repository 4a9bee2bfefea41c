"""Shared fixtures: paths to ../shared data (missing shared data fails loudly), the mini model,
a local Ray, one torch thread."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Independent readers of the export formats, installed apart by scripts/setup.sh because they
# pin older versions of this stack; last on the path, so they never shadow the environment.
TEST_READERS = REPO / ".venv" / "test-readers"
if TEST_READERS.is_dir() and str(TEST_READERS) not in sys.path:
    sys.path.append(str(TEST_READERS))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"required shared data is missing: {path} (expected ../shared beside the checkout)"
        )
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(SHARED / "sam2_reference")


@pytest.fixture(scope="session")
def mini_a_dir() -> Path:
    return _require(SHARED / "sam2_reference" / "mini_a")


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return _require(SHARED / "videos")


@pytest.fixture(scope="module")
def mini(mini_a_dir: Path):
    """The mini model (../shared/sam2_reference/mini_a: config and checkpoint), built once per
    test module. Its files, for commands and workers: ``labeling_helpers.mini_files``."""
    from sam2_core import build_model

    torch.manual_seed(0)
    return build_model(
        str(mini_a_dir / "config.json"), checkpoint=str(mini_a_dir / "checkpoint.pt")
    )


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance for one test module (2 CPUs, no dashboard)."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    # address="local": always a fresh instance, never a cluster left running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after): on a busy 2-core machine this runs the
    small training and tracking loops several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> tuple[str, dict]:
    """(output URI, storage options): a local folder, or a fresh prefix in the requesting test
    module's moto bucket (its module-scoped ``s3`` fixture and its ``BUCKET``)."""
    import uuid

    if request.param == "local":
        return str(tmp_path / "out"), {}
    s3 = request.getfixturevalue("s3")
    return f"s3://{request.module.BUCKET}/{uuid.uuid4().hex[:8]}/out", s3.storage_options
