#!/usr/bin/env python3
"""Compares label candidates for the meta-database on the calibration cells: each proxy score
alone, and each combined with NASWOT by the mean of their ranks, against NAS-Bench-201's
CIFAR-10 accuracy (Spearman), on each spread of cells. Reads the calibration files that record
epoch losses (scripts/calibrate.sh) and prints a markdown table.

    python3 scripts/calibration-labels.py docs/calibration/p1000-e10-r16-c8-n1-sotl.jsonl \
        docs/calibration/p1000-e10-r16-c8-n1-sotl-cells59.jsonl
"""
import json
import sys


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)


def params(arch):
    # the free parameter count of the cell: 3x3 convolutions weigh 9, 1x1 weigh 1
    return sum(9 if "conv_3x3" in e else 1 if "conv_1x1" in e else 0 for e in arch.split("|"))


def scores(rows):
    nas = [r["naswot"] if r.get("naswot") is not None else -1e300 for r in rows]
    return {
        "held-out accuracy": [r["proxy_acc"] for r in rows],
        "final training accuracy": [r["proxy_train_acc"] for r in rows],
        "SoTL (minus all epoch losses)": [-sum(r["epoch_losses"]) for r in rows],
        "SoTL-E (minus the last epoch's loss)": [-r["epoch_losses"][-1] for r in rows],
        "parameter count (free)": [params(r["arch"]) for r in rows],
        "NASWOT (free)": nas,
    }


def main(paths):
    sets = [[json.loads(l) for l in open(p)] for p in paths]
    names = list(scores(sets[0]).keys())
    print("| score | " + " | ".join(f"alone, {len(s)} cells" for s in sets)
          + " | " + " | ".join(f"with NASWOT, {len(s)} cells" for s in sets) + " |")
    print("|---" * (1 + 2 * len(sets)) + "|")
    for name in names:
        alone, combined = [], []
        for rows in sets:
            truth = [r["nb201_cifar10"] for r in rows]
            sc = scores(rows)
            alone.append(spearman(sc[name], truth))
            nas = ranks(sc["NASWOT (free)"])
            mix = [a + b for a, b in zip(ranks(sc[name]), nas)]
            combined.append(spearman(mix, truth))
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in alone) + " | "
              + " | ".join(f"{x:.3f}" for x in combined) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
