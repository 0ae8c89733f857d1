"""Test session set-up: CPU JAX with 8 virtual devices (for sharding tests), quiet warnings."""

import os
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


SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared", "data")


def shared_data_path(relative: str):
    """``../shared/data/RELATIVE`` (read-only data beside the repository) as a path. Absent, the calling test
    is skipped with that reason, except under CI=true, where the data must be there and the test fails."""
    import pathlib

    path = pathlib.Path(SHARED_DATA, relative).resolve()
    if not path.exists():
        reason = f"shared data {path} is absent"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the shared data must be present)")
        pytest.skip(reason)
    return path
