"""Write the index of saved bench runs: python benchmarks/results_index.py [RESULTS_DIR]

Every `flowkernels bench --json` file in benchmarks/results/ gets one row (date, device, driver, versions, commit,
ops, machine load, copy bandwidth) in RESULTS_DIR/README.md, between the markers below; the text around the
markers (what each run was for) is kept. A test checks the table lists every JSON file as it is.
"""
import json
import pathlib
import sys

BEGIN, END = "<!-- index:begin -->", "<!-- index:end -->"
HEADER = ("| file | created (UTC) | device | driver | torch / triton | commit | ops | load 1/5/15 min | copy GB/s |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def _row(path: pathlib.Path) -> str:
    report = json.loads(path.read_text())
    env = report.get("environment", {})
    device = env.get("device", "?")
    if device == "cpu":
        device = f"CPU, {env.get('cpu_count', '?')} cores"
    commit = env.get("commit")
    commit = commit[:7] + (" (uncommitted changes)" if commit.endswith("+dirty") else "") if commit else "not recorded"
    load = env.get("load_average_1_5_15min")
    copy = report.get("copy_bandwidth_GBps")
    ops = sorted({r.get("op", "?") for r in report.get("results", [])})
    return (f"| [{path.name}]({path.name}) | {report.get('created', '?')[:16].replace('T', ' ')} | {device} | "
            f"{env.get('driver') or '–'} | {env.get('torch', '?')} / {env.get('triton') or '–'} | {commit} | "
            f"{', '.join(ops)} | {' / '.join(map(str, load)) if load else 'not recorded'} | "
            f"{f'{copy:.1f}' if copy else '–'} |")


def index_table(results_dir: pathlib.Path) -> str:
    rows = [_row(p) for p in sorted(results_dir.glob("*.json"))]
    return "\n".join([BEGIN, HEADER, *rows, END])


def update(results_dir: pathlib.Path) -> str:
    readme = results_dir / "README.md"
    text = readme.read_text() if readme.exists() else f"# Saved bench runs\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    text = head + index_table(results_dir) + tail
    readme.write_text(text)
    return text


if __name__ == "__main__":
    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent / "results")
    update(folder)
    print(f"wrote {folder / 'README.md'}")
