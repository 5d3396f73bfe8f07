import os
import warnings

import torch

# One intra-op thread: tests also start servers and worker processes, and torch's spinning OpenMP
# threads slow down badly when the cores are oversubscribed. Results are deterministic either way.
torch.set_num_threads(int(os.environ.get("KGC_TEST_THREADS", "1")))
warnings.filterwarnings("ignore", message="Sparse invariant checks")
