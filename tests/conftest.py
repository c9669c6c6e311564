"""Test setup: 8 fake CPU devices and one XLA compilation cache per session, set before JAX initialises."""
import os
import shutil
import sys
import tempfile

# the shared helpers (train_utils, fault_utils, ...) sit in tests/, above the test folders
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# One persistent compilation cache for the session: the xdist workers (started after this runs, so
# they inherit it) and every command line the tests start reuse each other's compiled executables
# instead of compiling the same tiny programs again (most of a test-size CLI run's CPU time). Only
# compile time changes: JAX's compile events still fire on a hit, and an entry it cannot read (one
# being written by another process) is compiled again, without its warning on the commands' stderr.
_CACHE = "JAX_COMPILATION_CACHE_DIR"
_own_cache = None
if _CACHE not in os.environ:
    _own_cache = os.environ[_CACHE] = tempfile.mkdtemp(prefix="jaxsparse-tests-xla-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (
        os.environ.get("PYTHONWARNINGS"), "ignore:Error reading persistent compilation cache entry")))


import pytest  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
# The files whose tests take over a minute in all, longest first (measured with --durations). Under
# xdist (`-n 2`) each file runs on one worker, so its module fixtures are built once and not once per
# worker, and these files start first, so that the many short files fill the end on both workers. A
# SAME_WORKER group (below) starts at the place of its first file here.
SLOW_FIRST = (
    "train/tpu_target/test_compile_for.py",
    "train/workdir/test_checkpoint_faults.py",  # with the other files of killed_run
    "train/loop/test_multihost.py",
    "hf/test_hf.py",
    "test_docs_commands.py",
    "train/loop/test_driver.py",
    "sweep/test_sweep_runner.py",
    "hf/test_hf_faults.py",
    "train/workdir/test_checkpoint_multihost.py",
    "data/test_data_formats.py",
    "test_replication.py",
    "test_replication_round2.py",
    "train/test_main.py",
    "test_launch_slurm.py",
    "train/steps/test_compiled.py",
)


# Files that share a session fixture run on one worker, so that it is built once (under `-n 2` a session
# fixture is built once per worker that asks for it): a fixture's name -> the files that use it.
SAME_WORKER = {
    "killed_run": ("train/workdir/test_checkpoint_faults.py", "inference/test_inference_faults.py",
                   "inference/test_reader_inputs.py"),
}
_GROUP_OF = {os.path.realpath(os.path.join(TESTS, f)): name for name, files in SAME_WORKER.items() for f in files}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Whole files per worker (`--dist loadfile`), SAME_WORKER's files as one unit."""
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return _GROUP_OF.get(os.path.realpath(config.rootpath / path), path)

    return SharedFixtureScheduling(config, log) if config.option.dist == "loadfile" else None


def pytest_unconfigure(config):
    if _own_cache:
        shutil.rmtree(_own_cache, ignore_errors=True)


def pytest_configure(config):
    named = [*SLOW_FIRST, *(f for files in SAME_WORKER.values() for f in files)]
    missing = [f for f in named if not os.path.isfile(os.path.join(TESTS, f))]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py: SLOW_FIRST or SAME_WORKER names files that do not exist: "
                               f"{missing}")
    if getattr(config.option, "dist", "no") == "load":  # what -n implies: whole files, in our order
        config.option.dist = "loadfile"
        config.option.loadscopereorder = False
    config.addinivalue_line("markers", "trainer: drives jaxsparse.train (needs the [train] extra); "
                                       "the pruning library's own CI step on the newest JAX leaves it out")


@pytest.fixture(scope="session")
def killed_run(tmp_path_factory):
    """The trainer's command line, SIGKILLed just after its checkpoint 8 committed and rerun to
    the end (steps 16, checkpoints and evals every 8): shared by the fault tests, which damage
    copies of its workdir."""
    from fault_utils import killed_and_resumed
    return killed_and_resumed(tmp_path_factory.mktemp("killed_run"))


def pytest_collection_modifyitems(items):
    """SLOW_FIRST's files first, in its order; every other test keeps its place relative to the rest."""
    rank = {os.path.join(TESTS, f): i for i, f in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(str(item.path), len(rank)))
