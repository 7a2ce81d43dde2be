import os
from pathlib import Path

import pytest

# no cold-start helper processes (neurons/_warm.py) beside the tests' many short trainings:
# tests/test_warm.py turns it on where it tests it
os.environ.setdefault("NEURONS_WARM", "0")

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def data_dir():
    """The real data sets: env NEURONS_DATA, else ../shared/data beside the checkout, else None."""
    env = os.environ.get("NEURONS_DATA")
    for cand in ([Path(env)] if env else []) + [SHARED]:
        if (cand / "mnist").is_dir():
            return cand
    return None


@pytest.fixture
def real_data():
    d = data_dir()
    if d is None:
        pytest.skip("real MNIST not found (set NEURONS_DATA or put it in ../shared/data)")
    return d
