#!/usr/bin/env python3
"""scripts/ab_table.py on synthetic fagen-bench logs: one row per cell and
variant (two variants in one cell stay apart), best pass per folder, the
ratio, failed (0 TFLOPS) rows skipped."""
import os
import subprocess
import sys
import tempfile

HEAD = "| d | S | causal | B | H | variant | err | ms | TFLOPS | features | base ms | base TFLOPS | ms/base |\n"


def row(d, s, causal, variant, tflops):
    return f"| {d} | {s} | {causal} | 1 | 8 | {variant} | 1e-03 | 1.0 | {tflops} | - | - | - | - |\n"


def main():
    script = sys.argv[1]
    with tempfile.TemporaryDirectory() as out:
        logs = {
            ("a", 1): [row(128, 4096, "no", "fwdwg_d128_bq128_bk128_w12_s2_pp_bf16_sm90a (default)", 600.0),
                       row(128, 4096, "no", "fwdwg_d128_bq128_bk96_w12_s2_bf16_sm90a", 500.0)],
            ("a", 2): [row(128, 4096, "no", "fwdwg_d128_bq128_bk128_w12_s2_pp_bf16_sm90a (default)", 610.0),
                       row(128, 4096, "no", "fwdwg_d128_bq128_bk96_w12_s2_bf16_sm90a", 0.0)],
            ("b", 1): [row(128, 4096, "no", "fwdwg_d128_bq128_bk128_w12_s2_pp_bf16_sm90a (default)", 671.0),
                       row(128, 4096, "no", "fwdwg_d128_bq128_bk96_w12_s2_bf16_sm90a", 550.0)],
            ("b", 2): [row(128, 4096, "no", "fwdwg_d128_bq128_bk128_w12_s2_pp_bf16_sm90a (default)", 640.0),
                       row(128, 4096, "no", "fwdwg_d128_bq128_bk96_w12_s2_bf16_sm90a", 540.0)],
        }
        for (tag, p), rows in logs.items():
            with open(os.path.join(out, f"{tag}.{p}.log"), "w") as f:
                f.write("fagen-bench header\n" + HEAD + "|---|\n" + "".join(rows))
        got = subprocess.run([sys.executable, script, out, "/x/a", "b"], check=True,
                             capture_output=True, text=True).stdout
    lines = got.splitlines()
    pp = [l for l in lines if "bk128_w12_s2_pp" in l]
    bk96 = [l for l in lines if "bk96" in l]
    assert len(pp) == 1 and len(bk96) == 1, got
    assert "| 600/610 | 671/640 | 1.100 |" in pp[0], got   # best passes 671 / 610
    assert "| 500 | 550/540 | 1.100 |" in bk96[0], got     # the 0-TFLOPS pass is skipped
    assert "geometric mean b/a over 2 rows: 1.100" in got, got
    print("ab_table: ok")


if __name__ == "__main__":
    main()
