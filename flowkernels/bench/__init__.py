"""`flowkernels bench`: the benchmark registry run side by side on one device, with tables, JSON and plots."""
from __future__ import annotations

import argparse

from .registry import OPS, cases
from .runner import format_tables, load_json, run_cases, write_json

__all__ = ["main", "cases", "run_cases", "format_tables", "write_json", "add_parser"]


def _configure(p):
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--sizes", default=None, help="comma-separated substrings of size names to keep")
    p.add_argument("--json", default=None, help="write the raw results here (rewritten after every case)")
    p.add_argument("--append", action="store_true", help="add to the results already in --json")
    p.add_argument("--plot", default=None, help="write PNG plots into this folder (needs matplotlib)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of timed calls per implementation")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=run_cli)
    return p


def add_parser(sub):
    return _configure(sub.add_parser("bench", help="benchmark flowkernels against its peers on this device"))


def run_cli(args) -> int:
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise SystemExit(f"--ops: unknown {unknown}; choose from {list(OPS)}")
    sizes = [s.strip() for s in args.sizes.split(",")] if args.sizes else None
    base = load_json(args.json) if args.json and args.append else None
    save = (lambda report: write_json(report, args.json, base=base)) if args.json else None
    report = run_cases(cases(device, ops, sizes), device, progress=not args.no_progress, min_time=args.min_time,
                       on_case=save)  # the JSON is rewritten after every case: a time limit loses nothing finished
    print(format_tables(report))
    if args.json:
        print(f"wrote {save(report)}")
    if args.plot:
        from .plot import plot_report
        for path in plot_report(report, args.plot):
            print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    return run_cli(_configure(argparse.ArgumentParser(prog="flowkernels bench")).parse_args(argv))
