"""Plot a `flowkernels bench --json` report: python benchmarks/plot.py RESULTS.json OUT_DIR"""
import json
import sys

from flowkernels.bench.plot import plot_report

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        for path in plot_report(json.load(f), sys.argv[2]):
            print(f"wrote {path}")
