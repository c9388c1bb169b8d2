#!/usr/bin/env python3
"""How well free, dataset-blind rankers order the cells of each meta-database task: the mean
within-task Spearman, per image source, of parameter count, FLOPs, NASWOT (on the task's own
images) and NAS-Bench-201's ImageNet16-120 accuracy against each label of the records (held-out
accuracy, final training accuracy, training speed = minus the last epoch's mean loss), and how
the three labels agree with each other. Complete tasks only (every planned cell recorded).
Reads the shard files, so it can run while the database is being built. No CIFAR column is
read. Prints markdown.

    python3 scripts/metadb-rankers.py data/metadb-v2 ../shared/data/nb201/nats_bench.csv
"""
import csv
import glob
import importlib.util
import json
import math
import os
import sys

_spec = importlib.util.spec_from_file_location(
    "calibration_labels", os.path.join(os.path.dirname(__file__), "calibration-labels.py"))
_cal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cal)
spearman = _cal.spearman


def mean(v):
    return sum(v) / len(v) if v else float("nan")


def main(db, table_csv):
    plan = json.load(open(os.path.join(db, "work", "plan.json")))
    tasks = [json.loads(line) for line in open(os.path.join(db, "tasks.jsonl"))]
    planned = {t: len(cells) for t, cells in enumerate(plan["cells"])}
    records = {}
    for path in sorted(glob.glob(os.path.join(db, "work", "records-*.jsonl"))):
        for line in open(path):
            if line.strip():
                r = json.loads(line)
                records.setdefault(r["task"], {})[r["arch"]] = r
    complete = {t: list(rs.values()) for t, rs in records.items() if len(rs) == planned.get(t)}
    in16 = {row["ArchitectureString"]: float(row["ImageNetTestAccuracy200Epochs"])
            for row in csv.DictReader(open(table_csv))}
    labels = {
        "held-out accuracy": lambda r: r["acc"],
        "training accuracy": lambda r: r["train_acc"],
        "training speed": lambda r: -r["epoch_losses"][-1],
    }
    # NASWOT is minus infinity (recorded as null) when the kernel matrix is singular
    rankers = {
        "params": lambda r: r["params"],
        "FLOPs": lambda r: r["flops"],
        "NASWOT": lambda r: r["naswot"] if r.get("naswot") is not None else -1e300,
        "ImageNet16-120 acc.": lambda r: in16[r["arch"]],
    }
    sources = sorted({tasks[t]["source"] for t in complete})
    n = {s: sum(1 for t in complete if tasks[t]["source"] == s) for s in sources}

    def rho(a, b):
        # a constant ranking (e.g. NASWOT minus infinity for every cell) orders nothing: 0
        if len(set(a)) < 2 or len(set(b)) < 2:
            return 0.0
        v = spearman(a, b)
        return 0.0 if math.isnan(v) else v

    print(f"{len(complete)} complete tasks of {len(tasks)}; mean within-task Spearman "
          "(random ranking: 0).\n")
    for name, label in labels.items():
        print(f"**{name}**\n")
        print("| source | tasks | " + " | ".join(rankers) + " |")
        print("|---|---|" + "---|" * len(rankers))
        for s in sources:
            cells = []
            for f in rankers.values():
                cells.append(mean([
                    rho([f(r) for r in rs], [label(r) for r in rs])
                    for t, rs in complete.items() if tasks[t]["source"] == s]))
            print(f"| {s} | {n[s]} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
        print()
    print("**agreement of the labels** (mean within-task Spearman)\n")
    pairs = [("held-out accuracy", "training accuracy"), ("held-out accuracy", "training speed"),
             ("training accuracy", "training speed")]
    print("| source | " + " | ".join(f"{a} ~ {b}" for a, b in pairs) + " |")
    print("|---|" + "---|" * len(pairs))
    for s in sources:
        cells = [mean([rho([labels[a](r) for r in rs], [labels[b](r) for r in rs])
                       for t, rs in complete.items() if tasks[t]["source"] == s])
                 for a, b in pairs]
        print(f"| {s} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
