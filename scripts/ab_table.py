#!/usr/bin/env python3
"""The table of scripts/ab-templates.sh: reads OUT/TAG.{1,2}.log (fagen-bench
output) for each folder and prints one row per (head_dim, S, causal, variant)
with each folder's TFLOPS per pass; with two folders also the ratio of their
best passes (second / first) and its geometric mean.

    python3 scripts/ab_table.py OUT DIR...
"""
import math
import os
import re
import sys


def rows(path):
    """(key, TFLOPS) for each timed row of one fagen-bench log."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return
    for line in lines:
        f = [x.strip() for x in line.split("|")]
        if len(f) > 9 and f[1].isdigit():
            try:
                tflops = float(f[9])
            except ValueError:
                continue
            if tflops <= 0:  # failed its check: not timed
                continue
            # The variant without the tokens every row of the cell shares.
            v = re.sub(r"_(bf16|fp16)_sm\d+a?|_causal", "", f[6]).split(" ")[0]
            yield (int(f[1]), int(f[2]), f[3], v), tflops


def main(argv):
    out, dirs = argv[1], argv[2:]
    tags = [os.path.basename(d.rstrip("/")) for d in dirs]
    cells, res = [], {}
    for t in tags:
        for p in (1, 2):
            for key, tf in rows(f"{out}/{t}.{p}.log"):
                if key not in cells:
                    cells.append(key)
                res.setdefault((t, key), []).append(tf)
    two = len(tags) == 2
    print("| d | S | causal | variant | " + " | ".join(tags) + (" | ratio |" if two else " |"))
    print("|---|---|---|---|" + "---|" * (len(tags) + two))
    logs = []
    for k in cells:
        vals = [res.get((t, k), []) for t in tags]
        ratio = ""
        if two and vals[0] and vals[1]:
            r = max(vals[1]) / max(vals[0])
            logs.append(math.log(r))
            ratio = f" {r:.3f} |"
        elif two:
            ratio = "  |"
        cols = " | ".join("/".join(f"{x:.0f}" for x in v) for v in vals)
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {cols} |{ratio}")
    if logs:
        print(f"geometric mean {tags[1]}/{tags[0]} over {len(logs)} rows: "
              f"{math.exp(sum(logs) / len(logs)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
