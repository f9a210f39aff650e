import pytest
import torch

from gptbook.corpora import corpus


@pytest.fixture(scope="session")
def verdict_path():
    return corpus("the-verdict", download=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models: one thread is as fast as two, and much faster when other processes share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: tens of seconds; tests/test_faults.py runs them with GPTBOOK_SLOW=1")
