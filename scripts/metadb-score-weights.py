#!/usr/bin/env python3
"""How well a weights directory's predictor orders the cells of each meta-database task: for
every complete task (every planned cell recorded), the task's feature rows are written to a
feature file, `metad2a score` scores the task's cells with them (the search's ranking: 10
resamples, seed 0), and the within-task Spearman against each label is averaged per source.
Reads the shard files, so it can run while the database is being built. Prints markdown.

    python3 scripts/metadb-score-weights.py data/metadb-v2 weights/nb201-lite0-ranker [BIN]

BIN defaults to target/release/metad2a. Note which sources the weights were meta-trained on:
their tasks are not held out from them.
"""
import json
import os
import runpy
import struct
import subprocess
import sys
import tempfile

_rk = runpy.run_path(os.path.join(os.path.dirname(__file__), "metadb-rankers.py"))
rho = _rk["rho"]


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return header, raw[8 + n:]


def write_safetensors(path, tensors):
    """tensors: name -> (dtype, shape, bytes)"""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main(db, weights, binary):
    header, data = read_safetensors(os.path.join(db, "features.safetensors"))
    fh = header["features"]
    dim = fh["shape"][1]
    width = {"F16": 2, "F32": 4}[fh["dtype"]]
    feats = data[fh["data_offsets"][0]:fh["data_offsets"][1]]
    oh = header["class_offsets"]
    offsets = struct.unpack(f"<{oh['shape'][0]}q", data[oh["data_offsets"][0]:oh["data_offsets"][1]])
    tasks, complete = _rk["complete_tasks"](db)
    labels = _rk["LABELS"]
    per_source = {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in sorted(complete):
            rows, ys = [], []
            for k, c in enumerate(tasks[t]["classes"]):
                a, b = offsets[c], offsets[c + 1]
                rows.append(feats[a * dim * width:b * dim * width])
                ys += [k] * (b - a)
            ffile = os.path.join(tmp, f"task{t}.safetensors")
            write_safetensors(ffile, {
                "features": (fh["dtype"], [len(ys), dim], b"".join(rows)),
                "labels": ("I64", [len(ys)], struct.pack(f"<{len(ys)}q", *ys)),
            })
            archs = sorted(complete[t])
            afile = os.path.join(tmp, f"task{t}.txt")
            open(afile, "w").write("\n".join(archs) + "\n")
            out = subprocess.run([binary, "score", "--weights", weights, "--features", ffile,
                                  "--archs", afile, "--json"], check=True, capture_output=True,
                                 text=True).stdout
            scores = {s["arch"]: s["score"] for s in json.loads(out)["archs"]}
            pred = [scores[a] for a in archs]
            src = tasks[t]["source"]
            for name, label in labels.items():
                per_source.setdefault(src, {}).setdefault(name, []).append(
                    rho(pred, [label(complete[t][a]) for a in archs]))
    print(f"`{weights}` on {len(complete)} complete tasks: mean within-task Spearman\n")
    print("| source | tasks | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for src in sorted(per_source):
        v = per_source[src]
        n = len(next(iter(v.values())))
        print(f"| {src} | {n} | " + " | ".join(f"{sum(v[k]) / n:.3f}" for k in labels) + " |")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else "target/release/metad2a")
