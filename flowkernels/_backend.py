"""Lazy access to the compiled core: `import flowkernels` never loads, builds or fails because of it."""
from __future__ import annotations

_native = None

REBUILD_HINT = ("reinstall flowkernels from source (pip install . ; FLOWKERNELS_CUDA=ON to require CUDA, "
                "with nvcc on PATH or CUDA_HOME set)")


def native():
    global _native
    if _native is None:
        try:
            from . import _C
        except ImportError as exc:  # pragma: no cover - only in a broken install
            raise RuntimeError(f"the flowkernels native extension (flowkernels._C) is not built: {REBUILD_HINT}") from exc
        _native = _C
    return _native


def require_cuda_build():
    if not native().cuda_built():
        raise RuntimeError("got a CUDA tensor, but flowkernels was built without CUDA: " + REBUILD_HINT)
