"""`flowkernels bench`: the benchmark registry run side by side on one device, with tables, JSON and plots."""
from __future__ import annotations

from .._cli_checks import Parser, device as check_device, output_dir, output_file, run
from .registry import OPS, cases
from .runner import format_tables, load_json, run_cases, write_json

__all__ = ["main", "cases", "run_cases", "format_tables", "write_json", "add_parser"]


def _configure(p):
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--sizes", default=None,
                   help="comma-separated substrings: keep the cases whose size name contains one of them (e.g. "
                   "'sphere-128,hunyuan'); also admits the sizes that run only on request (e.g. '512' for 512^3 "
                   "marching cubes on CPU); default: every size of the chosen ops except those")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="write the raw results (JSON) to FILE, rewritten after every case")
    p.add_argument("--append", action="store_true", help="add to the results already in --json")
    p.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots into DIR (needs matplotlib)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of timed calls per implementation")
    p.add_argument("--no-progress", action="store_true", help="do not print a line per case while running")
    p.set_defaults(fn=run_cli)
    return p


def add_parser(sub):
    return _configure(sub.add_parser("bench", help="benchmark flowkernels against its peers on this device",
                                     description="Every kernel against its peers, side by side in one run."))


def run_cli(args) -> int:
    import torch
    if args.device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = check_device("--device", args.device).type
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in OPS]
    if unknown or not ops:
        raise ValueError(f"--ops: unknown {unknown or args.ops!r}; choose from {','.join(OPS)}")
    if not args.min_time >= 0:
        raise ValueError(f"--min-time {args.min_time} must be >= 0")
    if args.json:
        output_file("--json", args.json)
    if args.plot:
        output_dir("--plot", args.plot)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()] if args.sizes else None
    selected = cases(device, ops, sizes)
    if not selected:
        raise ValueError(f"--sizes {args.sizes!r} matches no {device} case of {','.join(ops)}")
    base = load_json(args.json) if args.json and args.append else None
    save = (lambda report: write_json(report, args.json, base=base)) if args.json else None
    report = run_cases(selected, device, progress=not args.no_progress, min_time=args.min_time,
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
    args = _configure(Parser(prog="flowkernels bench")).parse_args(argv)
    return run(run_cli, args, "flowkernels bench")
