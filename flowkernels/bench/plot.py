"""Plots of a `flowkernels bench` report: achieved bandwidth against problem size for the memory-bound ops (with
the measured copy-bandwidth floor), and marching-cubes time against grid size for each peer."""
from __future__ import annotations

import os
from collections import defaultdict


def _draw(ax, series):
    for impl, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=impl)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_report(report: dict, out_dir: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    written = []
    device = report["environment"].get("device")
    bw = [r for r in report["results"] if "achieved_GBps" in r]
    if bw:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, op in zip(axes, ("loss", "sampler")):
            series = defaultdict(list)
            for r in (r for r in bw if r["op"] == op):
                series[r["impl"]].append((r["min_bytes"] / 2**20, r["achieved_GBps"]))
            _draw(ax, series)
            ax.axhline(report["copy_bandwidth_GBps"], color="k", ls="--", lw=1, label="copy bandwidth")
            ax.set(xscale="log", xlabel="minimum bytes moved (MiB)", ylabel="GB/s over minimum bytes",
                   title=f"{op} on {device}")
            ax.legend(fontsize=7)
        written.append(_save(fig, os.path.join(out_dir, "bandwidth.png")))
        plt.close(fig)
    mc = [r for r in report["results"] if r["op"] == "mc"]
    if mc:
        shapes = sorted({r["info"]["shape"] for r in mc})
        fig, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 4), squeeze=False)
        for ax, shape in zip(axes[0], shapes):
            series = defaultdict(list)
            for r in (r for r in mc if r["info"]["shape"] == shape):
                series[r["impl"]].append((r["info"]["grid"], r["median_ms"]))
            _draw(ax, series)
            ax.set(xscale="log", yscale="log", xlabel="grid size n (n^3 cells)", ylabel="median ms",
                   title=f"marching cubes, {shape}, {device}")
            ax.legend(fontsize=7)
        written.append(_save(fig, os.path.join(out_dir, "marching_cubes.png")))
        plt.close(fig)
    return written
