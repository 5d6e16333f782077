import os

import matplotlib
import pytest
import torch
from hypothesis import settings

matplotlib.use("Agg")

# Property tests draw the same examples on every run (derandomize) and keep no example
# database between runs: a test suite that passes once passes again, here and in CI. To
# explore new examples locally: pytest --hypothesis-profile=explore
settings.register_profile("pgbook", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", database=None, print_blob=True)
settings.load_profile("pgbook")


def _devices() -> list[str]:
    """The devices the device-parametrised tests run on: the CPU always, CUDA when available.
    ``PGBOOK_TEST_DEVICES=cuda`` (a comma-separated list) restricts them (``make gpu-check``)."""
    found = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    wanted = os.environ.get("PGBOOK_TEST_DEVICES", "").strip()
    if not wanted:
        return found
    asked = [d.strip() for d in wanted.split(",") if d.strip()]
    missing = [d for d in asked if d not in found]
    if missing:
        raise pytest.UsageError(f"PGBOOK_TEST_DEVICES asks for {missing}, but only {found} "
                                f"are available")
    return asked


DEVICES = _devices()


def pytest_configure(config):
    config.addinivalue_line("markers", "device: parametrised over the devices present "
                                       "(the `device` fixture); `pytest -m device` runs them")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each device present: ``cpu`` always, ``cuda`` when ``torch.cuda.is_available()``."""
    return torch.device(request.param)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The library's tests use tiny tensors: one intra-op thread is faster (far faster on a
    busy 2-core machine) and makes timings steadier. Restored at the end of the session."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
