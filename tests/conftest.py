"""Test setup: 8 fake CPU devices, set before JAX initialises."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()


def pytest_configure(config):
    config.addinivalue_line("markers", "trainer: drives jaxsparse.train (needs the [train] extra); "
                                       "the pruning library's own CI step on the newest JAX leaves it out")
