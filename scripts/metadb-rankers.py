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
import json
import math
import os
import runpy
import sys

_cal = runpy.run_path(os.path.join(os.path.dirname(__file__), "calibration-labels.py"))
spearman = _cal["spearman"]


def mean(v):
    return sum(v) / len(v) if v else float("nan")


# The labels of a record: held-out accuracy, final training accuracy, training speed.
LABELS = {
    "held-out accuracy": lambda r: r["acc"],
    "training accuracy": lambda r: r["train_acc"],
    "training speed": lambda r: -r["epoch_losses"][-1],
}


def rho(a, b):
    """Spearman; a constant ranking (e.g. NASWOT minus infinity for every cell) orders nothing: 0."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return 0.0
    v = spearman(a, b)
    return 0.0 if math.isnan(v) else v


def complete_tasks(db):
    """The database's tasks, and for each task whose planned cells are all recorded (in any
    shard file), its records by architecture."""
    plan = json.load(open(os.path.join(db, "work", "plan.json")))
    tasks = [json.loads(line) for line in open(os.path.join(db, "tasks.jsonl"))]
    records = {}
    for path in sorted(glob.glob(os.path.join(db, "work", "records-*.jsonl"))):
        for line in open(path):
            if line.strip():
                r = json.loads(line)
                records.setdefault(r["task"], {})[r["arch"]] = r
    return tasks, {t: rs for t, rs in records.items() if len(rs) == len(plan["cells"][t])}


def main(db, table_csv):
    tasks, complete = complete_tasks(db)
    complete = {t: list(rs.values()) for t, rs in complete.items()}
    in16 = {row["ArchitectureString"]: float(row["ImageNetTestAccuracy200Epochs"])
            for row in csv.DictReader(open(table_csv))}
    labels = LABELS
    # NASWOT is minus infinity (recorded as null) when the kernel matrix is singular
    rankers = {
        "params": lambda r: r["params"],
        "FLOPs": lambda r: r["flops"],
        "NASWOT": lambda r: r["naswot"] if r.get("naswot") is not None else -1e300,
        "ImageNet16-120 acc.": lambda r: in16[r["arch"]],
    }
    sources = sorted({tasks[t]["source"] for t in complete})
    n = {s: sum(1 for t in complete if tasks[t]["source"] == s) for s in sources}

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
