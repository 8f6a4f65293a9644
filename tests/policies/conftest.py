"""Fixtures for the policy tests (helpers live in policy_fixtures.py)."""

from __future__ import annotations

import pytest
import torch
from policy_fixtures import write_dataset


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    import datasets

    datasets.disable_progress_bars()
    return write_dataset(tmp_path_factory.mktemp("policy_data") / "synthetic")
