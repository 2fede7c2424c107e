"""On CI (``CI=true``) missing test resources fail the run with a clear message instead of skipping;
on a developer machine the same tests skip. Hypothesis stays derandomized on CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

INNER = '''
import pytest
from hypothesis import settings
from conftest import shared


def test_hypothesis_profile(capsys):
    with capsys.disabled():
        print("DERANDOMIZE=%s" % settings.default.derandomize)


def test_needs_data():
    shared("imagenette_train100")


@pytest.mark.browser
def test_needs_browser():
    pass
'''


def _run_inner(tmp_path: Path, ci: str | None, data: Path, chromium: Path,
               *select: str) -> subprocess.CompletedProcess:
    """Run INNER in a fresh pytest with the project's conftest as a plugin."""
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(CLUSTERMINE_TEST_DATA=str(data), CLUSTERMINE_TEST_CHROMIUM=str(chromium),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]), PYTHONDONTWRITEBYTECODE="1")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-rs", "-p", "no:cacheprovider", "-p", "conftest", "--rootdir",
                           str(tmp_path), "-o", "markers=browser", str(tmp_path / "test_inner.py"), *select],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_ci_fails_loudly_when_the_data_and_browser_are_missing(tmp_path):
    gone = tmp_path / "no-such-data"
    out = _run_inner(tmp_path, "true", gone, tmp_path / "no-chromium")
    text = out.stdout + out.stderr
    assert out.returncode == 4, text  # pytest.ExitCode.USAGE_ERROR: nothing ran, nothing skipped
    assert f"real test images not found: {gone}" in text and "Chromium not found" in text, text
    assert "passed" not in text and "skipped" not in text, text


def test_ci_without_browser_tests_needs_no_browser_but_still_the_data(tmp_path):
    out = _run_inner(tmp_path, "true", tmp_path / "no-such-data", tmp_path / "no-chromium", "-m", "not browser")
    text = out.stdout + out.stderr
    assert out.returncode == 4, text
    assert "real test images not found" in text and "Chromium not found" not in text, text


def test_ci_with_everything_present_runs_derandomized(tmp_path):
    from conftest import CHROMIUM, SHARED_DATA

    out = _run_inner(tmp_path, "true", SHARED_DATA, CHROMIUM, "-m", "not browser")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "DERANDOMIZE=True" in text and "2 passed" in text, text


def test_developer_machine_skips_instead(tmp_path):
    out = _run_inner(tmp_path, None, tmp_path / "no-such-data", tmp_path / "no-chromium", "-m", "not browser")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "DERANDOMIZE=False" in text and "1 passed, 1 skipped" in text, text
    assert "real data not available" in text


def test_missing_wordnet_is_named(monkeypatch, tmp_path):
    """WordNet cannot be removed from this machine for a subprocess: check the detector directly."""
    from clustermine.method import corpus
    from conftest import missing_ci_resources

    monkeypatch.setattr(corpus, "wordnet_candidates", lambda: [tmp_path / "nowhere"])
    problems = missing_ci_resources(tmp_path / "no-data", tmp_path / "chromium", need_browser=False)
    assert [p.split(":")[0] for p in problems] == ["real test images not found", "WordNet not found"]


RETENTION_INNER = '''
def test_passes(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"x" * 1024)


def test_fails(tmp_path):
    (tmp_path / "kept.bin").write_bytes(b"x")
    assert False
'''


def test_the_project_settings_drop_a_passed_tests_tmp_path_and_keep_a_failed_ones(tmp_path):
    """A full run mines or copies hundreds of runs (~90 MB each): the project's pytest settings must not
    leave them all on disk (it once filled a CI machine), yet a failure's files stay to be inspected."""
    (tmp_path / "test_retention.py").write_text(RETENTION_INNER)
    base = tmp_path / "basetemp"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
                          "--rootdir", str(tmp_path), "--basetemp", str(base), str(tmp_path / "test_retention.py")],
                         cwd=tmp_path, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                         capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert "1 failed, 1 passed" in text, text
    assert not list(base.glob("test_passes*")), sorted(p.name for p in base.iterdir())
    assert (base / "test_fails0" / "kept.bin").is_file(), sorted(p.name for p in base.iterdir())
