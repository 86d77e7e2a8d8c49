#!/usr/bin/env python3
"""Merges a partial re-tune into a shipped tuning table.

A tuning table records one template hash for all its entries, so any template
edit makes the whole table stale, although often only one kernel family
changed.  When `fagen-autotune --ops OPS` has re-measured the changed families
on the GPU, this writes a table that holds those new entries and carries the
other families' entries over from the old table, under the new table's
template hash; the policy records what was carried over and from when.

That is only right when the carried-over entries name the same kernels as
before.  The script checks it: every variant that a carried-over entry names
(winner and runner-up) is emitted by both fagen builds (--old-fagen and
--new-fagen, `fagen --emit`), and the two sources must be identical apart
from the banner's `// params:` line, which lists every knob of the variant
space (a new knob adds a field there); where the sources differ, both are
compiled (`fagen compile`) and their SASS (`cuobjdump -sass`) must be
identical.  Any other difference aborts.

    python3 scripts/merge-tune-table.py --base tables/SLUG.json --new NEW.json \\
        --ops fwdwg --old-fagen OLD/build/fagen --new-fagen build/fagen --out tables/SLUG.json

Without --new (and --ops) every entry is carried over: the table is stamped
with the new build's template hash (from its libfagen, --lib) after the same
check, for a GPU that could not be re-measured; it then lacks only what the
new templates added (a knob's other setting), which the heuristic's variant
and the check both show.

--drop OPS removes those families' entries instead: for a family whose
kernels changed when the GPU was not at hand to re-measure it.  The runtime
then serves its calls with the heuristic's variant (the table's source falls
through, as for any case a table lacks); the policy records what was dropped.
A later --new/--ops re-tune of a dropped family brings its entries back.

Entries measured with features (`fagen-autotune --features`, an entry's
"features" field) form families of their own, named OP:FEATURES
("fwdwg:softcap", "fwdwg:varlen+softcap"), in --ops and --drop as in the
policy.  A feature family that --base lacks is added by --new/--ops (the
plain families must already be whole there).
"""
import ctypes
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def emit(fagen, variants, out_dir):
    subprocess.run([fagen, "--emit", "-o", out_dir] + variants, check=True,
                   stdout=subprocess.DEVNULL)


def body(path):
    with open(path) as f:
        return [line for line in f if not line.startswith("// params:")]


def sass(fagen, tag, cuobjdump, name, tmp):
    """The SASS text of one variant compiled by one fagen build (tag: its folder)."""
    out = os.path.join(tmp, "cubin-" + tag)
    env = dict(os.environ, FAGEN_CACHE_DIR=out + "-cache")
    subprocess.run([fagen, "compile", "-o", out, name], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return subprocess.run([cuobjdump, "-sass", os.path.join(out, name + ".cubin")], check=True,
                          capture_output=True, text=True).stdout


def dump(obj, path):
    """Writes obj as fagen-autotune does (Jansson, indent 1, doubles as %.17g),
    so that the kept entries' lines do not change."""
    def mark(x):
        if isinstance(x, float):
            t = "%.17g" % x
            return "@@F" + (t if re.search(r"[.eEn]", t) else t + ".0") + "@@"
        if isinstance(x, dict):
            return {k: mark(v) for k, v in x.items()}
        if isinstance(x, list):
            return [mark(v) for v in x]
        return x
    text = json.dumps(mark(obj), indent=1, ensure_ascii=False)
    with open(path, "w") as f:
        f.write(re.sub(r'"@@F([^@]*)@@"', r"\1", text))  # no final newline, as Jansson


def family(e):
    """An entry's family: its op, or OP:FEATURES for one measured with features."""
    return e["op"] + (":" + e["features"] if e.get("features") else "")


def measured_dates(table):
    """{family: the date its entries were measured}: the table's date, except
    for the families a merge carried over, whose date the merge recorded."""
    co = table.get("policy", {}).get("carried_over") or {}
    when = co.get("measured")
    out = {}
    for e in table["entries"]:
        op = family(e)
        if op in co.get("ops", []) and when:
            out[op] = when.get(op, table.get("date")) if isinstance(when, dict) else when
        else:
            out[op] = table.get("date")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the table whose other families are kept")
    ap.add_argument("--new", help="fagen-autotune's table of the re-tuned families")
    ap.add_argument("--ops", default="", help="comma-separated families taken from --new")
    ap.add_argument("--drop", default="",
                    help="comma-separated families whose entries are removed (kernels changed, "
                         "not re-measured)")
    ap.add_argument("--lib", default="build/libfagen.so", help="the new build's libfagen")
    ap.add_argument("--cuobjdump", default="cuobjdump", help="for kernels whose source changed")
    ap.add_argument("--old-fagen", required=True, help="the fagen that generated --base's kernels")
    ap.add_argument("--new-fagen", required=True, help="the fagen of --new")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    ops = set(filter(None, a.ops.split(",")))
    if bool(a.new) != bool(ops):
        sys.exit("error: --new and --ops go together")
    drop = set(filter(None, a.drop.split(",")))
    if drop & ops:
        sys.exit(f"error: {sorted(drop & ops)} both re-measured (--ops) and dropped (--drop)")
    buf = ctypes.create_string_buffer(65)
    if ctypes.CDLL(a.lib).fagen_template_hash(buf) != 0:
        sys.exit(f"error: {a.lib}: fagen_template_hash failed")
    template_hash = buf.value.decode()
    base = json.load(open(a.base))
    new = json.load(open(a.new)) if a.new else dict(base, entries=[])
    if a.new and new.get("template_hash") != template_hash:
        sys.exit("error: --new was measured with other templates than --lib's")
    if base["device"] != new["device"]:
        sys.exit(f"error: device classes differ: {base['device']} vs {new['device']}")
    if not new.get("measured"):
        sys.exit("error: --new is not a measured table")
    missing = drop - {family(e) for e in base["entries"]}
    if missing:
        sys.exit(f"error: --drop names families that --base does not hold: {sorted(missing)}")
    got = {family(e) for e in new["entries"]}
    if got != ops:
        sys.exit(f"error: --new holds the families {sorted(got)}, --ops says {sorted(ops)}")
    kept = [e for e in base["entries"] if family(e) not in ops | drop]
    names = sorted({n for e in kept for n in (e["variant"], e.get("runner_up")) if n})
    same_source = 0
    with tempfile.TemporaryDirectory() as tmp:
        emit(a.old_fagen, names, os.path.join(tmp, "old"))
        emit(a.new_fagen, names, os.path.join(tmp, "new"))
        for n in names:
            if body(os.path.join(tmp, "old", n + ".cu")) == body(os.path.join(tmp, "new", n + ".cu")):
                same_source += 1
            elif (sass(a.old_fagen, "old", a.cuobjdump, n, tmp) !=
                  sass(a.new_fagen, "new", a.cuobjdump, n, tmp)):
                sys.exit(f"error: {n} compiles to another kernel now: re-tune its family too")
    # The re-measured entries take the places of the old ones, case for case;
    # a family an earlier merge dropped, or a feature family, that --base
    # holds no entries of comes in whole, after the others.
    key = lambda e: (family(e), e["dtype"], e["head_dim"], e["causal"], e["seqlen"])
    was_dropped = set((base.get("policy", {}).get("dropped") or {}).get("ops", []))
    held = {family(e) for e in base["entries"]}
    returning = {op for op in ops if (op in was_dropped or ":" in op) and op not in held}
    fresh = {key(e): e for e in new["entries"] if family(e) not in returning}
    stale = [key(e) for e in base["entries"] if family(e) in ops]
    if sorted(stale) != sorted(fresh):
        sys.exit("error: --new measured other cases than --base holds for those families")
    out = dict(new)
    out["template_hash"] = template_hash
    out["entries"] = [fresh[key(e)] if family(e) in ops else e for e in base["entries"]
                      if family(e) not in drop]
    out["entries"] += [e for e in new["entries"] if family(e) in returning]
    policy = dict(new.get("policy", {}))
    dates = measured_dates(base)
    kept_ops = sorted({family(e) for e in kept})
    when = {op: dates[op] for op in kept_ops}
    policy["carried_over"] = {
        "ops": kept_ops,
        # One date, or each family's where the kept ones were measured on
        # different days (a table merged before).
        "measured": (when[kept_ops[0]] if len(set(when.values())) == 1 else when)
                    if kept_ops else None,
        "template_hash": base.get("template_hash"),
        "why": "the kernels they name are unchanged (fagen --emit: the same source, or "
               "fagen compile: the same SASS)",
    }
    # Families an earlier merge dropped stay dropped until a re-tune brings
    # them back; each keeps the template hash its last entries were measured with.
    before = (base.get("policy", {}).get("dropped") or {}).get("template_hash", {})
    dropped = {op: h for op, h in before.items() if op not in ops}
    dropped.update({op: base.get("template_hash") for op in drop})
    policy.pop("dropped", None)
    if dropped:
        policy["dropped"] = {
            "ops": sorted(dropped),
            "template_hash": dict(sorted(dropped.items())),
            "why": "their kernels changed and were not re-measured on this GPU: the "
                   "heuristic's variants serve them",
        }
    out["policy"] = policy
    dump(out, a.out)
    print(f"{a.out}: {len(new['entries'])} entries of {sorted(ops) or 'no family'} re-measured, "
          f"{len(kept)} carried over (measured {policy['carried_over']['measured']}), "
          f"{sum(family(e) in drop for e in base['entries'])} of {sorted(drop) or 'no family'} dropped "
          f"({len(names)} variants checked: "
          f"{same_source} the same source, {len(names) - same_source} the same SASS)")


if __name__ == "__main__":
    main()
