#!/usr/bin/env python3
"""Plot benches/bench_e2e.py's results: tokens/s against input length, one line per engine.

    python3 -m pip install --user matplotlib      # dev-only dependency, not in the test requirements
    python3 benches/plot_e2e.py [--json bench-out/e2e.json] [--out docs/e2e-throughput.png]

With "by_length" in the JSON (bench_e2e.py --by-length ...) the plot is tokens/s against the input
length in tokens on a log2 axis; without it, a bar chart of each engine's tokens/s over the mixed
corpus. Engines that failed are left out and named in the legend or under the bars. The title names
the model directory, the CPU model, and the threads and cores the benchmark ran with.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "bench-out" / "e2e.json"
DEFAULT_OUT = ROOT / "docs" / "e2e-throughput.png"


def title(report: dict, what: str) -> str:
    machine = report.get("machine", {})
    threads = machine.get("threads", report.get("threads"))
    cores = machine.get("cpu_count", report.get("cpu_count"))
    cpu = machine.get("cpu_model")
    where = ", ".join(p for p in (cpu, f"{threads} threads" if threads else None,
                                  f"{cores} cores" if cores else None) if p)
    model = Path(report.get("model_dir", "")).name
    return f"{what}: {model}" + (f"\n{where}" if where else "")


def plot_by_length(ax, report: dict) -> None:
    by_length = report["by_length"]
    lengths = by_length["lengths"]
    for engine, per_length in by_length["engines"].items():
        if "error" in per_length:
            ax.plot([], [], linestyle="none", label=f"{engine} (failed)")
            continue
        points = [(n, per_length[str(n)]["tokens_per_s"]) for n in lengths if str(n) in per_length]
        style = "-" if engine.startswith("candle") else "--"
        ax.plot([n for n, _ in points], [t for _, t in points], style, marker="o", label=engine)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_xlabel("tokens per input (<|endoftext|> included)")
    ax.set_ylabel("tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title(report, "Embedding throughput by input length"))


def plot_bars(ax, report: dict) -> None:
    engines = report["engines"]
    names = list(engines)
    values = [r.get("tokens_per_s", 0.0) for r in engines.values()]
    bars = ax.bar(names, values, color=["C0" if n.startswith("candle") else "C1" for n in names])
    labels = ["failed" if "error" in r else f"{r['tokens_per_s']:.0f}" for r in engines.values()]
    ax.bar_label(bars, labels=labels)
    corpus = report.get("corpus", {})
    ax.set_ylabel("tokens/s")
    ax.set_xlabel(f"{corpus.get('inputs', '?')} inputs, median {corpus.get('median', 0):.0f} tokens")
    ax.set_title(title(report, "Embedding throughput"))


def main() -> None:
    parser = argparse.ArgumentParser(description="plot bench_e2e.py's JSON")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(args.json.read_text(encoding="utf-8"))
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    if report.get("by_length", {}).get("engines"):
        plot_by_length(ax, report)
    else:
        plot_bars(ax, report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
