"""Fixtures for the trainer tests: private copies of the tiny models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def lm_dir(tiny_lm_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_lm_dir, tmp_path / "lm"))


@pytest.fixture
def llava_dir(tiny_llava_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_llava_dir, tmp_path / "llava"))
