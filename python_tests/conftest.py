import os
import random
import zlib

import torch

# Triton kernels run on CPU tensors through the interpreter; it must be set before flowkernels is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Fresh inputs every run; FLOWKERNELS_TEST_SEED=<n> replays a run (the header prints the seed used).
BASE_SEED = int(os.environ.get("FLOWKERNELS_TEST_SEED", random.randrange(2**31)))


def pytest_report_header(config):
    return f"flowkernels: FLOWKERNELS_TEST_SEED={BASE_SEED}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}"


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    torch.manual_seed((BASE_SEED + zlib.crc32(request.node.nodeid.encode())) % (2**31))
    yield
