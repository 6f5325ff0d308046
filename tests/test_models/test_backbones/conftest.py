"""Shared settings of the backbone tests."""
import pytest
import torch


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One intra-op thread: the models here are tiny, and on a busy 2-core
    machine thread hand-offs cost ten times the compute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
