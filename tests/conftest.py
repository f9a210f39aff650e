import pytest
import torch

from gptbook.data import find_verdict


@pytest.fixture(scope="session")
def verdict_path():
    return find_verdict("the-verdict.txt", download=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
