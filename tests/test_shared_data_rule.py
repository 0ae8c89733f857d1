"""The rule for tests that read ../shared/data (tests/conftest.py): skipped with the reason in a clone without it,
an error under CI=true (the run fails). Runs pytest on a marked test beside a copy of the conftest, where no ../shared/data exists."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("ci, outcome", [(None, "1 skipped"), ("true", "1 error")])
def test_tests_reading_absent_shared_data_skip_or_fail_under_ci(tmp_path, ci, outcome):
    tests = tmp_path / "clone" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), tests / "conftest.py")
    (tests / "test_reads.py").write_text("import pytest\n\n@pytest.mark.shared_data\ndef test_reads():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = ci
    result = subprocess.run([sys.executable, "-m", "pytest", "-rsf", "-p", "no:cacheprovider", "-p", "no:xdist",
                             str(tests)], cwd=tmp_path / "clone", env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert outcome in result.stdout, result.stdout
    assert f"reads {tmp_path / 'shared' / 'data'}, which is absent" in result.stdout
