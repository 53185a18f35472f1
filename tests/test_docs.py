"""The documentation site builds without a warning: a broken link, anchor or API reference fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    # mkdocs, mkdocs-material and mkdocstrings come with the dev extra (and the docs extra)
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").read_text().count("run_search") > 0
    assert "First release" in (tmp_path / "site" / "changelog" / "index.html").read_text()  # CHANGELOG.md included


def test_readme_is_a_landing_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for command in ("aebnas-search", "aebnas-profile", "aebnas-stream", "aebnas-export", "aebnas-report"):
        assert command in readme
    for link in ("docs/getting-started.md", "docs/results/index.md"):
        assert (REPO / link).is_file() and link in readme
