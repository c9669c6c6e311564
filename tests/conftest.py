"""Test setup: 8 fake CPU devices, set before JAX initialises."""
import os
import sys

# the shared helpers (train_utils, fault_utils, ...) sit in tests/, above the test folders
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()


import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "trainer: drives jaxsparse.train (needs the [train] extra); "
                                       "the pruning library's own CI step on the newest JAX leaves it out")


@pytest.fixture(scope="session")
def killed_run(tmp_path_factory):
    """The trainer's command line, SIGKILLed just after its checkpoint 8 committed and rerun to
    the end (steps 16, checkpoints and evals every 8): shared by the fault tests, which damage
    copies of its workdir."""
    from fault_utils import killed_and_resumed
    return killed_and_resumed(tmp_path_factory.mktemp("killed_run"))
