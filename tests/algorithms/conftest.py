"""Algorithm tests: one torch thread, and the policy fixtures on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "policies"))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
