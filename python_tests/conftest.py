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


def pytest_terminal_summary(terminalreporter, exitstatus, config=None):
    """After a failing run (also under -q, which hides the header): the seed that replays its random inputs."""
    if exitstatus not in (0, 5):  # 5: no tests collected
        terminalreporter.write_line(f"random inputs of this run: replay with FLOWKERNELS_TEST_SEED={BASE_SEED}")


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    torch.manual_seed((BASE_SEED + zlib.crc32(request.node.nodeid.encode())) % (2**31))
    yield


# --- shared fakes: stand-ins for the objects of the systems the drop-ins replace ---------------------------------
# TRELLIS's SparseTensor as its samplers and trainer see it (.feats, .layout, .shape, .device, .replace, arithmetic)
from flowkernels.reference.trellis import SparseTensorLike as FakeSparse  # noqa: E402


class ToyVelocityModel(torch.nn.Module):
    """v(x, t, cond): nonlinear in x, depends on t and on the condition (so guidance matters); counts its calls."""

    def __init__(self, channels=8):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(channels, channels) * 0.4)
        self.calls = 0

    def forward(self, x, t, cond=None, **kwargs):
        self.calls += 1
        h = x @ self.w.to(x.dtype) + (t.view(-1, *[1] * (x.dim() - 1)) * 1e-3).to(x.dtype)
        if cond is not None:
            h = h + cond.to(x.dtype)
        return torch.tanh(h)


class ToyTransportModel(torch.nn.Module):
    """SiT-style model(x [B, L, C], t [B], **model_kwargs): linear in x plus a time embedding."""

    def __init__(self, c=8):
        super().__init__()
        self.lin = torch.nn.Linear(c, c)
        self.temb = torch.nn.Linear(1, c)

    def forward(self, x, t, scale=1.0):
        return scale * self.lin(x) + self.temb(t.view(-1, 1, 1).to(x.dtype))


class ToyDenoiser(torch.nn.Module):
    """TRELLIS-style denoiser(x_t, t * 1000, cond) on dense tensors or FakeSparse."""

    def __init__(self, channels=8):
        super().__init__()
        self.lin = torch.nn.Linear(channels, channels)

    def forward(self, x, t, cond=None, **kw):
        feats = x.feats if hasattr(x, "feats") else x
        out = self.lin(feats) + 1e-4 * t.mean()
        return x.replace(out) if hasattr(x, "feats") else out
