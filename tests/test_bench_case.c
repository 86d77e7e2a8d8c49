/* fagen-bench's matching of --variant to cells (bench/fg_bench_case.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "fg_bench_case.h"

/* Regression: a forced wgmma forward variant (fwdwg_...) used to be dropped
 * silently by fagen-bench --mode fwd, which matched only FAGEN_OP_FWD. */
Test(bench_case, forward_cells_take_both_forward_families) {
  fg_case c;
  memset(&c, 0, sizeof c);
  c.mode = FG_MODE_FWD;
  cr_assert(fg_case_takes_op(&c, FAGEN_OP_FWD));
  cr_assert(fg_case_takes_op(&c, FAGEN_OP_FWD_WGMMA));
  cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD));
  cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD_DET));
}

/* Regression of the same kind for the backward: a forced bwdwg_... variant
 * must be timed in the non-deterministic backward cells. */
Test(bench_case, backward_cells_take_their_backward_only) {
  fg_case c;
  memset(&c, 0, sizeof c);
  cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD_WGMMA), "fwd mode");
  for (int mode = FG_MODE_BWD; mode <= FG_MODE_FWDBWD; mode++) {
    c.mode = (fg_mode)mode;
    c.deterministic = 0;
    cr_assert(fg_case_takes_op(&c, FAGEN_OP_BWD));
    cr_assert(fg_case_takes_op(&c, FAGEN_OP_BWD_WGMMA));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD_DET));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_FWD));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_FWD_WGMMA));
    c.deterministic = 1;
    cr_assert(fg_case_takes_op(&c, FAGEN_OP_BWD_DET));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD_WGMMA));
  }
}

/* Regression: with several head dims in one run, fagen-bench --mode bwd
 * handed a d128 --variant to the d64 cells (the forward's "compiled head_dim
 * at least the call's" rule), and the backward refused it: it takes its own
 * head_dim only. */
Test(bench_case, forced_variant_head_dim) {
  fg_case c;
  memset(&c, 0, sizeof c);
  fagen_variant sel, d128, d64;
  cr_assert_eq(fagen_variant_parse("bwd_d64_bq32_bk128_w4_s2_bf16_sm90a", &sel), FAGEN_OK);
  cr_assert_eq(fagen_variant_parse("bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a", &d128), FAGEN_OK);
  cr_assert_eq(fagen_variant_parse("bwdwg_d64_bq128_bk128_w12_s2_bf16_sm90a", &d64), FAGEN_OK);
  c.mode = FG_MODE_BWD;
  c.head_dim = 64;
  c.dtype = FAGEN_DTYPE_BF16;
  cr_assert_not(fg_case_fits_variant(&c, &d128, &sel), "a d128 backward in a d64 cell");
  cr_assert(fg_case_fits_variant(&c, &d64, &sel));
  c.causal = 1;
  cr_assert_not(fg_case_fits_variant(&c, &d64, &sel), "causal differs");
  /* The forward runs a larger compiled head_dim. */
  fagen_variant fsel, f128;
  cr_assert_eq(fagen_variant_parse("fwdwg_d64_bq128_bk128_w12_s2_causal_bf16_sm90a", &fsel), FAGEN_OK);
  cr_assert_eq(fagen_variant_parse("fwdwg_d128_bq128_bk128_w12_s2_causal_bf16_sm90a", &f128), FAGEN_OK);
  c.mode = FG_MODE_FWD;
  cr_assert(fg_case_fits_variant(&c, &f128, &fsel));
  cr_assert_not(fg_case_fits_variant(&c, &d64, &fsel), "a backward variant in a forward cell");
}

/* --candidates: in the non-deterministic backward cells on sm_90a both
 * atomic backward families (bwdwg only without features); elsewhere the
 * selected variant's family alone. */
Test(bench_case, candidate_ops) {
  fg_case c;
  memset(&c, 0, sizeof c);
  fagen_variant sel;
  fagen_op ops[2];
  c.mode = FG_MODE_BWD;
  cr_assert_eq(fagen_variant_parse("bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a", &sel), FAGEN_OK);
  cr_assert_eq(fg_case_candidate_ops(&c, &sel, ops), 2);
  cr_assert(ops[0] == FAGEN_OP_BWD_WGMMA && ops[1] == FAGEN_OP_BWD);
  cr_assert_eq(fagen_variant_parse("bwd_d128_bq64_bk128_w8_s2_bf16_sm90a", &sel), FAGEN_OK);
  cr_assert_eq(fg_case_candidate_ops(&c, &sel, ops), 2);
  cr_assert(ops[0] == FAGEN_OP_BWD && ops[1] == FAGEN_OP_BWD_WGMMA);
  c.mode = FG_MODE_FWDBWD;
  cr_assert_eq(fg_case_candidate_ops(&c, &sel, ops), 2);
  cr_assert_eq(fagen_variant_parse("bwd_d128_bq64_bk128_w8_s2_softcap_bf16_sm90a", &sel),
               FAGEN_OK);
  cr_assert_eq(fg_case_candidate_ops(&c, &sel, ops), 1, "features: bwd only");
  cr_assert_eq(ops[0], FAGEN_OP_BWD);
  cr_assert_eq(fagen_variant_parse("bwd_d128_bq64_bk128_w8_s2_bf16_sm90", &sel), FAGEN_OK);
  cr_assert_eq(fg_case_candidate_ops(&c, &sel, ops), 1, "sm_90 (not 90a)");
  cr_assert_eq(fagen_variant_parse("bwd_d128_bq64_bk128_w8_s2_bf16_sm80", &sel), FAGEN_OK);
  cr_assert_eq(fg_case_candidate_ops(&c, &sel, ops), 1, "sm_80");
  c.deterministic = 1;
  cr_assert_eq(fagen_variant_parse("bwddet_d128_bq64_bk128_w8_s2_bf16_sm90a", &sel), FAGEN_OK);
  cr_assert_eq(fg_case_candidate_ops(&c, &sel, ops), 1, "deterministic");
  cr_assert_eq(ops[0], FAGEN_OP_BWD_DET);
  c.mode = FG_MODE_FWD;
  c.deterministic = 0;
  cr_assert_eq(fagen_variant_parse("fwdwg_d128_bq128_bk128_w12_s2_bf16_sm90a", &sel), FAGEN_OK);
  cr_assert_eq(fg_case_candidate_ops(&c, &sel, ops), 1, "fwd mode");
  cr_assert_eq(ops[0], FAGEN_OP_FWD_WGMMA);
}
