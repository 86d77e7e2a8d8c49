#!/usr/bin/env python3
"""scripts/merge-tune-table.py on a shipped table: a synthetic re-tune of one
family replaces that family's entries case for case, the others are kept
byte for byte under the library's template hash, and mismatched inputs are
refused.  Both builds are this one (every kernel is then the same).

    check_merge_tune_table.py SCRIPT FAGEN LIBFAGEN TABLE
"""
import json
import subprocess
import sys
import tempfile


def fam(e):
    """An entry's family, as the script names it: op, or OP:FEATURES."""
    return e["op"] + (":" + e["features"] if e.get("features") else "")


def run(script, fagen, lib, base, new, ops, out, drop=None):
    cmd = [sys.executable, script, "--base", base, "--old-fagen", fagen, "--new-fagen", fagen,
           "--lib", lib, "--out", out]
    if new:
        cmd += ["--new", new, "--ops", ops]
    if drop:
        cmd += ["--drop", drop]
    return subprocess.run(cmd, capture_output=True, text=True)


def main():
    script, fagen, lib, table = sys.argv[1:5]
    base = json.load(open(table))
    with tempfile.TemporaryDirectory() as tmp:
        # The library's hash: a carry-everything merge stamps it.
        r = run(script, fagen, lib, table, None, "", f"{tmp}/all.json")
        assert r.returncode == 0, r.stderr
        stamped = json.load(open(f"{tmp}/all.json"))
        lib_hash = stamped["template_hash"]
        assert stamped["entries"] == base["entries"]
        assert stamped["policy"]["carried_over"]["template_hash"] == base["template_hash"]

        # A re-tune of fwdwg: every case, other times, today.
        new = dict(base, template_hash=lib_hash, date="2030-01-01")
        new["entries"] = [dict(e, ms=e["ms"] * 0.5) for e in base["entries"] if fam(e) == "fwdwg"]
        json.dump(new, open(f"{tmp}/new.json", "w"))
        r = run(script, fagen, lib, table, f"{tmp}/new.json", "fwdwg", f"{tmp}/out.json")
        assert r.returncode == 0, r.stderr
        out = json.load(open(f"{tmp}/out.json"))
        assert out["template_hash"] == lib_hash and out["date"] == "2030-01-01"
        assert len(out["entries"]) == len(base["entries"])
        for b, o in zip(base["entries"], out["entries"]):
            assert o == (dict(b, ms=b["ms"] * 0.5) if fam(b) == "fwdwg" else b), (b, o)
        carried = out["policy"]["carried_over"]
        assert "fwdwg" not in carried["ops"], carried
        # The kept families' date: the base's, or the one a merge recorded.
        before = base.get("policy", {}).get("carried_over")
        assert carried["measured"] == (before["measured"] if before else base["date"]), carried
        # Kept entries keep their text (doubles as Jansson writes them).
        first_kept = next(e for e in base["entries"] if fam(e) != "fwdwg")
        line = '"runner_up_ms": %.17g' % first_kept["runner_up_ms"]
        assert line in open(table).read() and line in open(f"{tmp}/out.json").read(), line

        # A merge of a merge: each kept family keeps the date it was measured.
        fresh = dict(base, date="2028-01-01", policy={k: v for k, v in base.get("policy", {}).items()
                                                     if k != "carried_over"})
        json.dump(fresh, open(f"{tmp}/fresh.json", "w"))
        r = run(script, fagen, lib, f"{tmp}/fresh.json", f"{tmp}/new.json", "fwdwg", f"{tmp}/m1.json")
        assert r.returncode == 0, r.stderr
        m1 = json.load(open(f"{tmp}/m1.json"))
        assert m1["policy"]["carried_over"]["measured"] == "2028-01-01", m1["policy"]
        fwd = dict(new, date="2031-01-01")
        fwd["entries"] = [e for e in base["entries"] if fam(e) == "fwd"]
        json.dump(fwd, open(f"{tmp}/fwd.json", "w"))
        r = run(script, fagen, lib, f"{tmp}/m1.json", f"{tmp}/fwd.json", "fwd", f"{tmp}/m2.json")
        assert r.returncode == 0, r.stderr
        m2 = json.load(open(f"{tmp}/m2.json"))
        want = {op: "2030-01-01" if op == "fwdwg" else "2028-01-01"
                for op in {fam(e) for e in base["entries"]} - {"fwd"}}
        assert m2["date"] == "2031-01-01" and m2["policy"]["carried_over"]["measured"] == want, \
            m2["policy"]
        assert sorted(m2["policy"]["carried_over"]["ops"]) == sorted(want)

        # --drop: a family removed (no GPU to re-measure it), the rest kept
        # as they were; a later merge keeps it dropped until a re-tune brings it back.
        r = run(script, fagen, lib, table, None, "", f"{tmp}/d1.json", drop="bwdwg")
        assert r.returncode == 0, r.stderr
        d1 = json.load(open(f"{tmp}/d1.json"))
        assert d1["entries"] == [e for e in base["entries"] if fam(e) != "bwdwg"]
        assert len(d1["entries"]) < len(base["entries"])
        assert d1["policy"]["dropped"]["ops"] == ["bwdwg"], d1["policy"]
        assert d1["policy"]["dropped"]["template_hash"] == {"bwdwg": base["template_hash"]}
        assert "bwdwg" not in d1["policy"]["carried_over"]["ops"]
        r = run(script, fagen, lib, f"{tmp}/d1.json", f"{tmp}/new.json", "fwdwg", f"{tmp}/d2.json")
        assert r.returncode == 0, r.stderr
        d2 = json.load(open(f"{tmp}/d2.json"))
        assert d2["policy"]["dropped"] == d1["policy"]["dropped"], d2["policy"]
        assert not any(fam(e) == "bwdwg" for e in d2["entries"])
        # A re-tune of the dropped family brings it back: its entries join the
        # table and the dropped record goes (regression: the merge refused it,
        # "other cases than --base holds", since --base held none of them).
        back = dict(new, entries=[dict(e, ms=e["ms"] * 0.5) for e in base["entries"]
                                  if fam(e) == "bwdwg"])
        json.dump(back, open(f"{tmp}/back.json", "w"))
        r = run(script, fagen, lib, f"{tmp}/d1.json", f"{tmp}/back.json", "bwdwg", f"{tmp}/d3.json")
        assert r.returncode == 0, r.stderr
        d3 = json.load(open(f"{tmp}/d3.json"))
        assert "dropped" not in d3["policy"], d3["policy"]
        key = lambda e: (fam(e), e["dtype"], e["head_dim"], e["causal"], e["seqlen"])
        assert sorted(map(key, d3["entries"])) == sorted(map(key, base["entries"]))
        assert [e for e in d3["entries"] if fam(e) == "bwdwg"] == back["entries"]
        # but only a dropped one: a family --base lacks for no recorded reason is refused
        nodrop = dict(d1, policy=dict(d1["policy"], dropped=None))
        json.dump(nodrop, open(f"{tmp}/nodrop.json", "w"))
        r = run(script, fagen, lib, f"{tmp}/nodrop.json", f"{tmp}/back.json", "bwdwg", f"{tmp}/bad.json")
        assert r.returncode != 0 and "other cases" in r.stderr, r.stderr
        r = run(script, fagen, lib, table, f"{tmp}/new.json", "fwdwg", f"{tmp}/bad.json", drop="fwdwg")
        assert r.returncode != 0 and "both re-measured" in r.stderr, r.stderr
        r = run(script, fagen, lib, f"{tmp}/d1.json", None, "", f"{tmp}/bad.json", drop="bwdwg")
        assert r.returncode != 0 and "does not hold" in r.stderr, r.stderr

        # A feature family (entries measured with softcap) joins a table that
        # has none, after the others; merged again, it is replaced case for case.
        def softcap(e):
            name = e["variant"].replace("_bf16_", "_softcap_bf16_").replace("_fp16_", "_softcap_fp16_")
            return dict(e, features="softcap", variant=name, ms=e["ms"] * 1.2)
        plain = dict(base, entries=[e for e in base["entries"] if not e.get("features")])
        json.dump(plain, open(f"{tmp}/plain.json", "w"))
        sc = dict(new, entries=[softcap(e) for e in base["entries"] if fam(e) == "fwdwg"])
        json.dump(sc, open(f"{tmp}/sc.json", "w"))
        r = run(script, fagen, lib, f"{tmp}/plain.json", f"{tmp}/sc.json", "fwdwg:softcap", f"{tmp}/f1.json")
        assert r.returncode == 0, r.stderr
        f1 = json.load(open(f"{tmp}/f1.json"))
        assert f1["entries"] == plain["entries"] + sc["entries"]
        assert "fwdwg:softcap" not in f1["policy"]["carried_over"]["ops"]
        assert "fwdwg" in f1["policy"]["carried_over"]["ops"]
        sc2 = dict(sc, entries=[dict(e, ms=e["ms"] * 2) for e in sc["entries"]])
        json.dump(sc2, open(f"{tmp}/sc2.json", "w"))
        r = run(script, fagen, lib, f"{tmp}/f1.json", f"{tmp}/sc2.json", "fwdwg:softcap", f"{tmp}/f2.json")
        assert r.returncode == 0, r.stderr
        f2 = json.load(open(f"{tmp}/f2.json"))
        assert f2["entries"] == plain["entries"] + sc2["entries"]
        # The feature family's entries are not the plain family's: --ops fwdwg
        # with only softcap entries in --new is refused.
        r = run(script, fagen, lib, table, f"{tmp}/sc.json", "fwdwg", f"{tmp}/bad.json")
        assert r.returncode != 0 and "families" in r.stderr, r.stderr

        # Refused: other families than --ops, another device, other templates.
        r = run(script, fagen, lib, table, f"{tmp}/new.json", "fwd", f"{tmp}/bad.json")
        assert r.returncode != 0 and "families" in r.stderr, r.stderr
        json.dump(dict(new, device=dict(new["device"], sm_count=1)), open(f"{tmp}/dev.json", "w"))
        r = run(script, fagen, lib, table, f"{tmp}/dev.json", "fwdwg", f"{tmp}/bad.json")
        assert r.returncode != 0 and "device classes differ" in r.stderr, r.stderr
        json.dump(dict(new, template_hash="0" * 64), open(f"{tmp}/hash.json", "w"))
        r = run(script, fagen, lib, table, f"{tmp}/hash.json", "fwdwg", f"{tmp}/bad.json")
        assert r.returncode != 0 and "other templates" in r.stderr, r.stderr
        short = dict(new, entries=new["entries"][1:])
        json.dump(short, open(f"{tmp}/short.json", "w"))
        r = run(script, fagen, lib, table, f"{tmp}/short.json", "fwdwg", f"{tmp}/bad.json")
        assert r.returncode != 0 and "other cases" in r.stderr, r.stderr
    print("merge_tune_table: ok")


if __name__ == "__main__":
    main()
