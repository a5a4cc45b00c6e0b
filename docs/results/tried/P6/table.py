"""The table of docs/results/tried/P6/table.md from the suites' summaries (validation accuracy,
mean of 8 seeds, at 10 / 20 / 50 / 100 / 500 steps):  python docs/results/tried/P6/table.py"""

import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
HORIZONS = (10, 20, 50, 100, 500)


def row(path):
    results = json.load(open(path))["results"]
    cells = []
    for r in results:
        val = r["methods"]["blur"]["val_mean"]
        cells.append(" / ".join(f"{val[r['steps'].index(h)]:.3f}" for h in HORIZONS))
    return [r["label"] for r in results], cells


def main():
    paths = sorted(glob.glob(os.path.join(HERE, "suites", "*.json")))
    labels, _ = row(paths[0])
    print("| probe | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for p in paths:
        print(f"| {os.path.basename(p)[:-5]} | " + " | ".join(row(p)[1]) + " |")


if __name__ == "__main__":
    main()
