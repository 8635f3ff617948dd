"""Build entry point: setuptools drives CMake + Ninja for the native core (flowkernels._C).

Switches (environment):
  FLOWKERNELS_CUDA=AUTO|ON|OFF      build the CUDA driver (AUTO: when nvcc is found)
  CMAKE_CUDA_ARCHITECTURES / CUDAARCHS / TORCH_CUDA_ARCH_LIST   target GPUs (default sm_80 + sm_90 + PTX)
  CUDA_HOME / CUDACXX               where nvcc lives (also looked for on PATH and in /usr/local/cuda/bin)
  FLOWKERNELS_CPU_ARCH=x86-64-v2    -march for the CPU marching cubes on x86-64 ("" = compiler default,
                                    "native" = this machine only)
  FLOWKERNELS_OPENMP=AUTO|ON|OFF    CPU flow kernels on the OpenMP runtime torch uses (AUTO: when the compiler
                                    has OpenMP); without it they use their own thread pool
  FLOWKERNELS_BUILD_JOBS            parallel compile jobs
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def find_nvcc():
    candidates = [os.environ.get("CUDACXX")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def cuda_architectures():
    for var in ("CMAKE_CUDA_ARCHITECTURES", "CUDAARCHS"):
        if os.environ.get(var):
            return os.environ[var]
    torch_list = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if torch_list:  # "8.0;9.0+PTX" -> "80-real;90"
        archs = []
        for item in re.split(r"[;\s,]+", torch_list.strip()):
            if not item:
                continue
            num = item.replace("+PTX", "").replace(".", "")
            archs.append(num if item.endswith("+PTX") else f"{num}-real")
        return ";".join(archs)
    return None


def tool(module, attr, exe):
    """cmake / ninja from the build environment's pip packages, else from PATH."""
    try:
        mod = __import__(module)
        path = os.path.join(getattr(mod, attr), exe)
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    return shutil.which(exe)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        # An isolated build env is deleted after each install: a cache that points into an old one must go.
        cache = build_dir / "CMakeCache.txt"
        if cache.exists():
            cache.unlink()
        shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)

        mode = os.environ.get("FLOWKERNELS_CUDA", "AUTO").upper()
        if mode not in ("AUTO", "ON", "OFF"):
            raise ValueError(f"FLOWKERNELS_CUDA={mode!r} must be AUTO, ON or OFF")
        cmake, ninja = tool("cmake", "CMAKE_BIN_DIR", "cmake"), tool("ninja", "BIN_DIR", "ninja")
        args = [
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DFLOWKERNELS_OUTPUT_DIR={out_dir}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        omp = os.environ.get("FLOWKERNELS_OPENMP", "AUTO").upper()
        if omp not in ("AUTO", "ON", "OFF"):
            raise ValueError(f"FLOWKERNELS_OPENMP={omp!r} must be AUTO, ON or OFF")
        args.append(f"-DFLOWKERNELS_OPENMP={omp}")
        if "FLOWKERNELS_CPU_ARCH" in os.environ:
            args.append(f"-DFLOWKERNELS_CPU_ARCH={os.environ['FLOWKERNELS_CPU_ARCH']}")
        if ninja:
            args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        nvcc = find_nvcc() if mode != "OFF" else None
        if mode == "ON" and not nvcc:
            raise RuntimeError("FLOWKERNELS_CUDA=ON but nvcc was not found (set CUDA_HOME or CUDACXX)")
        args.append(f"-DFLOWKERNELS_CUDA={'ON' if nvcc else 'OFF'}")
        if nvcc:
            args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
            archs = cuda_architectures()
            if archs:
                args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
        jobs = os.environ.get("FLOWKERNELS_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call([cmake, "-S", str(ROOT), "-B", str(build_dir), *args])
        subprocess.check_call([cmake, "--build", str(build_dir), "--parallel", jobs])


setup(ext_modules=[Extension("flowkernels._C", sources=[])], cmdclass={"build_ext": CMakeBuild})
