"""Missing dependencies: a skip only for what CI cannot have (helpers.DEPENDENCIES), a failure under CI otherwise."""
import pytest

from helpers import DEPENDENCIES, IN_CI, why_missing

SKIP_ALLOWED_IN_CI = pytest.StashKey[str]()


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*names): the test needs these helpers.DEPENDENCIES")


def pytest_runtest_setup(item):
    for marker in item.iter_markers("requires"):
        for name in marker.args:
            why = why_missing(name)
            if why is None:
                continue
            if DEPENDENCIES[name].from_setup and IN_CI:
                pytest.fail(f"CI=true and {name} is missing: {why}", pytrace=False)
            if not DEPENDENCIES[name].from_setup:
                item.stash[SKIP_ALLOWED_IN_CI] = name
            pytest.skip(f"{name}: {why}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, any skip that `requires` did not grant for something CI cannot have is a failure."""
    report = (yield).get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail") and SKIP_ALLOWED_IN_CI not in item.stash:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=true ({reason}); only what CI cannot have (GPU, TensorRT) may be "
                           f"skipped there, declared with helpers.requires")
