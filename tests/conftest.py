import os
import warnings

import pytest
import torch

import kgcomplete

# One intra-op thread: tests also start servers and worker processes, and torch's spinning OpenMP
# threads slow down badly when the cores are oversubscribed. Results are deterministic either way.
torch.set_num_threads(int(os.environ.get("KGC_TEST_THREADS", "1")))
warnings.filterwarnings("ignore", message="Sparse invariant checks")


@pytest.fixture(scope="session")
def umls_run_dir(tmp_path_factory):
    """A tiny umls DistMult run trained once per session through the CLI (`kgc train`), shared by the
    CLI, serving, report and browser tests."""
    from click.testing import CliRunner

    from kgcomplete.cli.main import cli

    out = tmp_path_factory.getbasetemp() / "umls-distmult"
    if not (out / "metrics.json").exists():
        res = CliRunner().invoke(cli, ["train", "--dataset", "umls", "--model", "distmult", "--out", str(out),
                                       "--epochs", "6", "--dim", "32", "--no-progress", "--set", "training.eval_every=3",
                                       "--set", "training.threads=1"])  # one thread: far faster on a small, shared CPU
        assert res.exit_code == 0, res.output
        assert "test" in res.output and "mrr" in res.output
    return out


@pytest.fixture(scope="module")
def run(umls_run_dir):
    return kgcomplete.load_run(umls_run_dir)


# ------------------------------------------------------------------------------ skip policy
#: A skip hides a test. Only these reasons may skip (the reason must start with "<key>:"); any other
#: skip - a missing extra, a missing shared dataset, an importorskip - fails the run at the end.
ALLOWED_SKIPS = {
    "gpu": "the test needs a CUDA device and this machine has none",
    "browser": "Chromium (Debian package chromium) is not installed",
    "mount": "the disk-full test mounts a small tmpfs, which needs root and a machine that allows it",
}
if not os.environ.get("CI"):  # CI always has ../shared beside the checkout; a user's clone may not
    ALLOWED_SKIPS["shared"] = "the benchmark copies in ../shared/datasets are not beside this checkout"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _not_allowed(stats) -> list[tuple[str, str]]:
    """Skips whose reason has no allowed key, and every xfail/xpass (an expected failure hides a test too)."""
    bad = [(r.nodeid, _skip_reason(r)) for r in stats.get("skipped", [])
           if _skip_reason(r).split(":", 1)[0].strip() not in ALLOWED_SKIPS]
    bad += [(r.nodeid, f"{kind}: expected failures are not allowed") for kind in ("xfailed", "xpassed")
            for r in stats.get(kind, [])]
    return bad


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    bad = _not_allowed(terminalreporter.stats)
    if bad:
        terminalreporter.section("skips that are not allowed", sep="=", red=True, bold=True)
        for nodeid, reason in bad:
            terminalreporter.line(f"{nodeid}: {reason}")
        terminalreporter.line(f"allowed skip reasons: {', '.join(f'{k!r} ({v})' for k, v in ALLOWED_SKIPS.items())}; "
                              f"install what is missing (pip install -e '.[test,kgt5,serve,browser]').")


def pytest_sessionfinish(session, exitstatus):
    # the terminal summary runs after sessionfinish; decide the exit status here
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and _not_allowed(reporter.stats) and session.exitstatus == 0:
        session.exitstatus = 1
