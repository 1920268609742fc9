import os

import pytest
import torch

# The Triton kernels run on the CPU through the interpreter when no GPU is
# present; the variable must be set before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_cpu_thread():
    """Tiny tensors: on a busy 2-core machine a second OpenMP thread makes
    these steps ten times slower, and speeds nothing up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
