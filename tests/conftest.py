import os
import socket
import sys
from pathlib import Path
import pytest

# Tests never touch the network: a hub call without these hangs ~45 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

# Two xdist workers share the machine's cores. Left alone, every worker's torch (and every notebook kernel it starts)
# takes all the cores, and the processes spin against each other: 05_loss's CI tier, 48 s alone, took 1,069 s in the
# suite, and the suite 27 minutes. Each worker, and everything it starts, gets its share of the cores instead
# (7 minutes).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root() -> Path:
    return ROOT


# --- processes started by torchrun ------------------------------------------------------------------------------------
# Tests marked `torchrun` start several processes that meet over TCP on 127.0.0.1. They skip where that cannot work
# (no torchrun, not POSIX, no loopback networking); `pytest -m "not torchrun"` leaves them out on purpose (the marker
# is declared in pyproject.toml). CI runs them.

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def torchrun_can_start() -> bool:
    if os.name != "posix" or not Path(TORCHRUN).exists():
        return False
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(config, items):
    if torchrun_can_start():
        return
    skip = pytest.mark.skip(
        reason="torchrun cannot start processes here (no torchrun, not POSIX, or no loopback network)"
    )
    for item in items:
        if "torchrun" in item.keywords:
            item.add_marker(skip)
