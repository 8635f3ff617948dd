"""Lazy access to the compiled core (flowkernels._C): `import flowkernels` never loads, builds or fails because of it."""
from __future__ import annotations

_module = None

REBUILD_HINT = ("reinstall flowkernels from source (pip install . ; FLOWKERNELS_CUDA=ON to require CUDA, "
                "with nvcc on PATH or CUDA_HOME set)")


def load():
    """The extension module, imported on first use."""
    global _module
    if _module is None:
        try:
            from . import _C
        except ImportError as exc:  # pragma: no cover - only in a broken install
            raise RuntimeError(f"the flowkernels native extension (flowkernels._C) is not built: {REBUILD_HINT}") from exc
        _module = _C
    return _module


def require_cuda_build():
    if not load().cuda_built():
        raise RuntimeError("got a CUDA tensor, but flowkernels was built without CUDA: " + REBUILD_HINT)
