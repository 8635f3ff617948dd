"""Compile every GPU kernel for real GPU targets without a GPU, and check what the compiler made of it.

Triton: the launch plans of every op (`flowkernels.ops.*_plan`, the functions the launchers themselves use) are
built with CPU tensors for a GPU-sized target, bound by Triton's own argument binder (the specialization a GPU
launch would compute: dtypes, 16-byte alignment, divisible-by-16 integers) and compiled with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`, which needs no device. Each result is
checked for: a compile error, register spills above 16 bytes (from ptxas -v's log), more than 128 registers,
more registers than the plan's programs-per-SM allow, and, for dense fp32/bf16 cases with 16-byte-aligned rows,
no 128-bit global loads (ld.global.v4 in the PTX). The stack frame is reported, not failed: libdevice's fp64
sin/cos and 64-bit division keep local arrays or call frames there that are no spills. The Philox column counts
mul.hi.u32 per element a thread handles (~14 for tl.randn's one Philox call per element).

CUDA: every .cu file CMakeLists.txt lists is compiled with nvcc -arch=sm_<arch> -Xptxas -v for each --arch; a
kernel with spill stores/loads or a stack frame (local memory) fails, and so does one whose registers, block size
(its __launch_bounds__, read from the PTX's .maxntid) and shared memory leave the SM less than half full of
threads (`occupancy`, from the architecture's per-SM limits). Our kernels (namespace fk) must declare their block
size; library kernels without one (CUB's init kernels) are reported unchecked.

    flowkernels compile-check [--arch 90,80] [--json FILE] [--full] [--no-cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

MAX_REGISTERS = 128
MAX_SPILL_BYTES = 16
MIN_CUDA_OCCUPANCY = 0.5
ROOT = Path(__file__).resolve().parent.parent

# 128-bit global loads in PTX: four 32-bit or two 64-bit lanes per instruction
_V128_LOAD = re.compile(r"\bld\.global[\w.:]*\.(?:v4\.[bfsu]32|v2\.[bfsu]64)\b")
_V128_STORE = re.compile(r"\bst\.global[\w.:]*\.(?:v4\.[bfsu]32|v2\.[bfsu]64)\b")
_PHILOX_MULHI = re.compile(r"\bmul\.hi\.u32\b")


@dataclass
class Case:
    """One launch configuration of one op: `build()` returns its LaunchPlan (CPU tensors, GPU target)."""
    op: str
    config: str
    build: Callable
    wide_loads: bool = False   # dense fp32/bf16 rows, 16-byte aligned: 128-bit loads are required
    elems_per_thread: int = 8  # elements a thread handles per tile (normalizes the Philox count)


@dataclass
class Result:
    op: str
    kernel: str
    config: str
    arch: int
    ok: bool = True
    problems: list = field(default_factory=list)
    registers: Optional[int] = None
    register_budget: Optional[int] = None
    stack: Optional[int] = None
    spill_stores: Optional[int] = None
    spill_loads: Optional[int] = None
    shared: Optional[int] = None
    threads: Optional[int] = None       # CUDA: block size from __launch_bounds__
    occupancy: Optional[float] = None   # CUDA: resident threads / the SM's maximum
    v128_loads: Optional[int] = None
    loads: Optional[int] = None
    v128_stores: Optional[int] = None
    philox_mulhi_per_element: Optional[float] = None
    seconds: float = 0.0

    def fail(self, why: str):
        self.ok = False
        self.problems.append(why)


# --- Triton ---------------------------------------------------------------------------------------------------------
def _tool(name: str) -> Optional[str]:
    import triton.backends.nvidia as nv
    bundled = os.path.join(os.path.dirname(nv.__file__), "bin", name)
    return bundled if os.path.isfile(bundled) else shutil.which(name)


_JIT_OF_INTERPRETED = {}


def _jit(kernel):
    """The JITFunction of a kernel. Under TRITON_INTERPRET=1 `triton.jit` returns an InterpretedFunction, which
    has no binder: an equivalent JITFunction (same function, same do_not_specialize) serves for binding only."""
    if hasattr(kernel, "signature") and hasattr(kernel, "params"):
        return kernel
    from triton.runtime.jit import JITFunction
    if kernel.fn not in _JIT_OF_INTERPRETED:
        _JIT_OF_INTERPRETED[kernel.fn] = JITFunction(kernel.fn, **getattr(kernel, "kwargs", {}))
    return _JIT_OF_INTERPRETED[kernel.fn]


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def bind(plan, arch: int):
    """Triton's own binder for `plan` on sm_<arch>: (kernel, specialization key, (signature, constexprs, attrs,
    options)). The key is what a launch caches compiled variants by."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = _jit(plan.kernel)
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = dict(plan.constexprs, num_warps=plan.spec.num_warps, debug=False)
    bound, specialization, options = binder(*plan.args, **kwargs)
    key = repr(specialization) + repr(sorted(options.items()))
    packed = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return kernel, key, packed


def variant_key(plan, arch: int = 90) -> str:
    """The key a GPU launch of `plan` would look its compiled variant up by (the compile-check's binder)."""
    return bind(plan, arch)[1]


def _resource_usage(cubin: bytes) -> dict:
    tool = _tool("cuobjdump")
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, timeout=60).stdout
    finally:
        os.unlink(f.name)
    usage = {}
    for key, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out.split("Function", 1)[-1]):
        usage.setdefault(key, int(value))
    return usage


def compile_case(case: Case, arch: int) -> Result:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    start = time.perf_counter()
    plan = case.build()
    res = Result(case.op, plan.name, case.config, arch, register_budget=plan.spec.register_budget)
    from triton import knobs
    log = io.StringIO()
    try:
        # always compile (a cached kernel brings no ptxas log) and capture ptxas -v's log, which Triton prints
        with knobs.compilation.scope(), knobs.nvidia.scope(), contextlib.redirect_stdout(log), \
                warnings.catch_warnings():
            knobs.compilation.always_compile = True
            knobs.nvidia.dump_ptxas_log = True
            warnings.simplefilter("ignore")  # knob notices of newer Triton versions
            kernel, _, (options, signature, constexprs, attrs) = bind(plan, arch)
            compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                                      target=GPUTarget("cuda", arch, 32), options=options.__dict__)
    except Exception as exc:  # any compiler failure is the finding, reported per case
        res.fail(f"compile error: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
        res.seconds = time.perf_counter() - start
        return res
    ptx = compiled.asm.get("ptx", "")
    usage = _resource_usage(compiled.asm["cubin"])
    res.registers = usage.get("REG")
    res.stack = usage.get("STACK", 0)  # the frame: spills, and libdevice's local arrays (fp64 sin/cos reduction)
    res.shared = compiled.metadata.shared
    spills = _PTXAS_FRAME.search(log.getvalue())
    if spills is None:
        res.fail("no ptxas log (spills unknown)")
    else:
        res.spill_stores, res.spill_loads = int(spills.group(2)), int(spills.group(3))
    res.loads = len(re.findall(r"\bld\.global", ptx))
    res.v128_loads = len(_V128_LOAD.findall(ptx))
    res.v128_stores = len(_V128_STORE.findall(ptx))
    res.philox_mulhi_per_element = round(len(_PHILOX_MULHI.findall(ptx)) / case.elems_per_thread, 2)
    if res.registers is None:
        res.fail("no resource usage (cuobjdump not found)")
    else:
        if res.registers > MAX_REGISTERS:
            res.fail(f"{res.registers} registers > {MAX_REGISTERS}")
        if res.registers > res.register_budget:
            res.fail(f"{res.registers} registers > {res.register_budget}, the budget for "
                     f"{plan.spec.programs_per_sm} programs of {plan.spec.num_warps} warps per SM")
    if res.spill_stores is not None and max(res.spill_stores, res.spill_loads) > MAX_SPILL_BYTES:
        res.fail(f"spills: {res.spill_stores} bytes stored, {res.spill_loads} loaded (> {MAX_SPILL_BYTES})")
    if case.wide_loads and res.v128_loads == 0:
        res.fail("no 128-bit global loads in a dense fp32/bf16 case")
    res.seconds = time.perf_counter() - start
    return res


# --- CUDA (nvcc) ----------------------------------------------------------------------------------------------------
def find_nvcc() -> Optional[str]:
    candidates = [os.environ.get("CUDACXX")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def cuda_flags(root: Path = ROOT) -> list[str]:
    """The include directories and CUDA-only compile options CMakeLists.txt gives the extension, so the check
    compiles the sources as the build does."""
    text = (root / "CMakeLists.txt").read_text()
    flags = []
    for block in re.findall(r"target_include_directories\(\s*_C\s+PRIVATE\s+([^)]*)\)", text):
        flags += [f"-I{root / d}" for d in block.split() if not d.startswith("$")]
    flags += re.findall(r"\$<\$<COMPILE_LANGUAGE:CUDA>:([^>]+)>", text)
    return flags


def cuda_sources(root: Path = ROOT) -> list[Path]:
    """The .cu files the CMake build compiles (every csrc/... .cu path CMakeLists.txt names)."""
    text = (root / "CMakeLists.txt").read_text()
    names = dict.fromkeys(re.findall(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.cu)\b", text))
    return [root / n for n in names if (root / n).is_file()]


_PTXAS_FUNC = re.compile(r"Compiling entry function '(\S+)' for '(sm_\w+)'")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")
_PTX_ENTRY = re.compile(r"\.entry\s+(\S+?)\s*\(")
_PTX_MAXNTID = re.compile(r"\.maxntid\s+(\d+)\s*,\s*(\d+)\s*,\s*(\d+)")

# Per-SM limits (CUDA occupancy calculator / programming guide, compute capabilities): registers, resident
# threads, resident blocks, shared memory for blocks (bytes; the runtime reserves 1 KiB more per block).
SM_LIMITS = {
    80: dict(registers=65536, threads=2048, blocks=32, smem=164 << 10),
    86: dict(registers=65536, threads=1536, blocks=16, smem=100 << 10),
    89: dict(registers=65536, threads=1536, blocks=24, smem=100 << 10),
    90: dict(registers=65536, threads=2048, blocks=32, smem=228 << 10),
}
REG_ALLOC_UNIT = 256        # registers are allocated per warp in units of 256
WARP_ALLOC_GRANULARITY = 4  # warps: one per SM sub-partition, each with a quarter of the register file
SMEM_ALLOC_UNIT = 128
SMEM_RESERVED_PER_BLOCK = 1024


def occupancy(registers: int, threads: int, smem: int, arch: int) -> Optional[float]:
    """Resident threads per SM / the SM's maximum for a kernel of `registers` per thread, `threads` per block and
    `smem` bytes of static shared memory per block on sm_<arch> (None for an architecture not in SM_LIMITS). At
    256 threads per block on sm_90, 64 registers give 4 blocks (50%), 65-72 give 3 (37.5%)."""
    lim = SM_LIMITS.get(arch)
    if lim is None or threads <= 0:
        return None
    warps = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    warps_by_regs = lim["registers"] // regs_per_warp // WARP_ALLOC_GRANULARITY * WARP_ALLOC_GRANULARITY
    smem_per_block = -(-(smem + SMEM_RESERVED_PER_BLOCK) // SMEM_ALLOC_UNIT) * SMEM_ALLOC_UNIT
    blocks = min(warps_by_regs // warps, lim["threads"] // (32 * warps), lim["smem"] // smem_per_block,
                 lim["blocks"])
    return blocks * warps * 32 / lim["threads"]


def ptx_block_sizes(ptx: str) -> dict:
    """{mangled kernel name: threads per block} for the entries of a PTX file that declare .maxntid (what
    __launch_bounds__ compiles to)."""
    sizes = {}
    for m in _PTX_ENTRY.finditer(ptx):
        header = ptx[m.end():ptx.find("{", m.end())]
        if d := _PTX_MAXNTID.search(header):
            sizes[m.group(1)] = int(d.group(1)) * int(d.group(2)) * int(d.group(3))
    return sizes


def parse_ptxas(log: str, source: str, arch: int, block_sizes: Optional[dict] = None) -> list[Result]:
    """Results from ptxas -v's log; with `block_sizes` (mangled name -> threads, `ptx_block_sizes`), each kernel's
    occupancy too."""
    results, current, mangled = [], None, []
    for line in log.splitlines():
        if m := _PTXAS_FUNC.search(line):
            current = Result("cuda", _demangle(m.group(1)), os.path.basename(source), arch, stack=0, shared=0)
            results.append(current)
            mangled.append(m.group(1))
        elif current is not None and (m := _PTXAS_FRAME.search(line)):
            frame, spill_st, spill_ld = map(int, m.groups())
            current.stack, current.spill_stores, current.spill_loads = frame, spill_st, spill_ld
            if spill_st or spill_ld:
                current.fail(f"spills: {spill_st} bytes stored, {spill_ld} bytes loaded")
            if frame:
                current.fail(f"{frame} bytes of stack frame (local memory)")
        elif current is not None and (m := _PTXAS_REGS.search(line)):
            current.registers = int(m.group(1))
            if s := _PTXAS_SMEM.search(line):
                current.shared = int(s.group(1))
    if block_sizes is not None:
        for res, name in zip(results, mangled):
            check_occupancy(res, name, block_sizes.get(name))
    return results


def check_occupancy(res: Result, mangled: str, threads: Optional[int]):
    res.threads = threads
    if threads is None:
        if mangled.startswith("_ZN2fk"):  # ours: the block size must be declared, or occupancy is unchecked
            res.fail("no __launch_bounds__ (block size unknown, occupancy unchecked)")
        return
    if res.registers is None:
        return
    res.occupancy = occupancy(res.registers, threads, res.shared or 0, res.arch)
    if res.occupancy is not None and res.occupancy < MIN_CUDA_OCCUPANCY:
        res.fail(f"occupancy {res.occupancy:.1%} < {MIN_CUDA_OCCUPANCY:.0%} on sm_{res.arch} "
                 f"({res.registers} registers, {threads} threads, {res.shared or 0} B smem per block)")


def _demangle(name: str) -> str:
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if tool:
        with contextlib.suppress(Exception):
            out = subprocess.run([tool, name], capture_output=True, text=True, timeout=10).stdout.strip()
            if out:
                name = out
    name = name.replace("(anonymous namespace)::", "").replace("fk::", "")
    return re.sub(r"^void ", "", re.sub(r"\(.*", "", name))


def compile_cuda(arch: int = 90, root: Path = ROOT) -> list[Result]:
    nvcc = find_nvcc()
    if nvcc is None:
        res = Result("cuda", "-", "nvcc", arch)
        res.fail("nvcc not found (set CUDACXX or CUDA_HOME)")
        return [res]
    results = []
    for src in cuda_sources(root):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            # --keep leaves the PTX, whose .maxntid gives each kernel's block size
            cmd = [nvcc, "-c", f"-arch=sm_{arch}", "-std=c++17", "-O3", "-Xptxas", "-v", "--keep", "--keep-dir", tmp,
                   f"-I{root / 'csrc'}", f"-I{src.parent}", *cuda_flags(root), "-o", os.path.join(tmp, "out.o"),
                   str(src)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            sizes = {}
            for ptx in Path(tmp).glob("*.ptx"):
                sizes.update(ptx_block_sizes(ptx.read_text()))
        found = parse_ptxas(proc.stdout + proc.stderr, str(src), arch, sizes)
        if proc.returncode != 0:
            res = Result("cuda", "-", src.name, arch)
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            res.fail(f"nvcc failed ({proc.returncode}): {tail}")
            found.append(res)
        for r in found:
            r.seconds = (time.perf_counter() - start) / max(len(found), 1)
        results += found
    return results


# --- the configurations ---------------------------------------------------------------------------------------------
def cases(full: bool = False) -> list[Case]:
    from . import compile_cases
    return compile_cases.all_cases() if full else compile_cases.representative_cases()


def run(archs=(90, 80), full: bool = False, cuda: bool = True, progress=None) -> list[Result]:
    results = []
    for case in cases(full):
        for arch in archs:
            results.append(compile_case(case, arch))
            if progress:
                progress(results[-1])
    if cuda:
        for arch in archs:
            for r in compile_cuda(arch):
                results.append(r)
                if progress:
                    progress(r)
    return results


def format_table(results: list[Result]) -> str:
    head = ("op", "kernel", "configuration", "sm", "regs", "budget", "spill", "stack", "smem", "occ", "v128 ld",
            "ld", "v128 st", "philox", "status")
    rows = [head]
    for r in results:
        spill = None if r.spill_stores is None else max(r.spill_stores, r.spill_loads or 0)
        kernel = r.kernel if len(r.kernel) <= 48 else r.kernel[:45] + "..."  # CUB's template names run long
        rows.append((r.op, kernel, r.config, str(r.arch), _s(r.registers), _s(r.register_budget), _s(spill),
                     _s(r.stack), _s(r.shared), "-" if r.occupancy is None else f"{r.occupancy:.1%}",
                     _s(r.v128_loads), _s(r.loads), _s(r.v128_stores), _s(r.philox_mulhi_per_element),
                     "ok" if r.ok else "FAIL: " + "; ".join(r.problems)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _s(v) -> str:
    return "-" if v is None else str(v)


def summary(results: list[Result]) -> str:
    failed = [r for r in results if not r.ok]
    triton_n = sum(r.op != "cuda" for r in results)
    return (f"{len(results)} compiled ({triton_n} Triton specializations, {len(results) - triton_n} CUDA kernels): "
            f"{len(failed)} failed")


def add_parser(sub):
    p = sub.add_parser("compile-check", help="compile every GPU kernel for sm_90/sm_80 without a GPU and check "
                                              "registers, spills and 128-bit loads")
    p.add_argument("--arch", default="90,80", help="comma-separated compute capabilities (default 90,80)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--full", action="store_true", help="every launch configuration (default: a representative set)")
    p.add_argument("--no-cuda", action="store_true", help="skip the nvcc compile of the CUDA sources")
    p.set_defaults(fn=cli)
    return p


# NVIDIA compute capabilities that Triton's NVPTX backend compiles for. A number outside this set (sm_99, or sm_88,
# which needs a newer PTX than Triton emits) aborts the whole process inside LLVM, so it is refused up front.
KNOWN_ARCHS = (70, 72, 75, 80, 86, 87, 89, 90, 100, 103, 110, 120, 121)


def parse_archs(text: str) -> tuple[int, ...]:
    try:
        archs = tuple(int(a) for a in text.split(",") if a.strip())
    except ValueError:
        archs = ()
    if not archs or any(a not in KNOWN_ARCHS for a in archs):
        raise ValueError(f"--arch={text!r}: expected compute capabilities from "
                         f"{','.join(map(str, KNOWN_ARCHS))}, such as 90,80")
    return archs


def cli(args) -> int:
    archs = parse_archs(args.arch)
    if interpreting():
        raise ValueError("compile-check compiles for GPUs: unset TRITON_INTERPRET (the interpreter replaces the "
                         "kernels' device functions)")
    start = time.perf_counter()
    results = run(archs, full=args.full, cuda=not args.no_cuda)
    print(format_table(results))
    print(f"{summary(results)} in {time.perf_counter() - start:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
        print(f"wrote {args.json}")
    return 0 if all(r.ok for r in results) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="flowkernels")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["compile-check"] + list(argv if argv is not None else sys.argv[1:]))
    try:
        return args.fn(args)
    except ValueError as exc:
        parser.exit(2, f"flowkernels compile-check: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
