#!/usr/bin/env python3
"""Prints the wgmma variants (fwdwg, bwdwg) that the shipped tables name,
winners and runners-up, one per line: the tuned kernels a static
(`fagen --emit`) user is most likely to build, beside the default set.

    .ci/table-wgmma-variants.py tables/*.json
"""
import json
import sys

names = set()
for path in sys.argv[1:]:
    with open(path) as f:
        for e in json.load(f)["entries"]:
            if e["op"] in ("fwdwg", "bwdwg"):
                names.update(n for n in (e["variant"], e.get("runner_up")) if n)
if not names:
    sys.exit("error: no fwdwg or bwdwg entries in " + " ".join(sys.argv[1:]))
print("\n".join(sorted(names)))
