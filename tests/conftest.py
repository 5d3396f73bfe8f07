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
    """A tiny trained umls run, shared by the serving/report/browser tests of one session."""
    out = tmp_path_factory.getbasetemp() / "serving-umls-distmult"
    if not (out / "metrics.json").exists():
        kgcomplete.train("umls", model="distmult", out=out, epochs=6, eval_every=2, dim=32, progress=False,
                         threads=1)  # one thread: far faster on a small, shared CPU
    return out


@pytest.fixture(scope="module")
def run(umls_run_dir):
    return kgcomplete.load_run(umls_run_dir)
