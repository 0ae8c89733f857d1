"""Test session set-up: CPU JAX with 8 virtual devices (for sharding tests), quiet warnings."""

import os
import pathlib
import warnings

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# The tests' programs are small and compile-bound: XLA's backend optimisations double their compile time
# and change no result beyond float rounding.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"

# One persistent compilation cache for the session's workers (and the subprocesses they start): many test
# files compile the same programs. Under .pytest_cache, so a fresh clone starts cold, like CI.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".pytest_cache", "jax")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

warnings.filterwarnings("ignore", category=ImportWarning)


@pytest.fixture(scope="session")
def object_stores():
    """A GCS emulator and a moto S3 server on free loopback ports, for the whole test session of this worker,
    with the environment that points every client at them (see tests/storage_servers.py)."""
    from storage_servers import running_object_stores

    with running_object_stores() as stores:
        yield stores


# Files whose module fixtures train or launch processes (a minute or more each under `make test`), slowest
# first: `--dist loadfile` hands files out in collection order, so the two workers then finish together
# instead of one waiting alone on a heavy file collected last.
SLOWEST_FILES_FIRST = ("test_train_storage.py", "test_train_run.py", "test_distributed.py", "test_finetune.py",
                       "test_tabular.py", "test_eval_harness.py", "test_forecast.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep their own order


# The public data sets beside the project (../shared/data: NAB, cloud-monitoring, ETT). Tests that read them carry
# the ``shared_data`` mark: in a clone outside this workspace they are skipped with the reason, but under
# CI=true (.ci/run) a missing folder fails them, so CI never passes by skipping.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_runtest_setup(item):
    if item.get_closest_marker("shared_data") is None or SHARED_DATA.is_dir():
        return
    reason = f"reads {SHARED_DATA}, which is absent (a clone outside the workspace that holds ../shared/data)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI=true: CI must have the data", pytrace=False)
    pytest.skip(reason)
