import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The library's tests use tiny tensors: one intra-op thread is faster (far faster on a
    busy 2-core machine) and makes timings steadier. Restored at the end of the session."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
