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


def pytest_collection_modifyitems(config, items):
    """On a GPU machine, the torch.compile and opcheck tests first: each
    compiles for one to three minutes beside the other test workers, and when
    they came last the GPU check's time limit stopped them unfinished (fourth
    GPU session)."""
    if torch.cuda.is_available():
        items.sort(key=lambda item: 0 if ("compile" in item.name or "opcheck" in item.name) else 1)
