/* fagen-autotune's choice of a case's variant from its times
 * (autotune/tune_pick.c): the margin over the default, ties, failed
 * candidates, the runner-up, and the confirmation rule.  No GPU. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "fagen.h"
#include "tune_pick.h"

/* Four candidates whose names sort as their indices: fwd_d128_bq64_bkN_w4_s1
 * with N = 32, 48, 64, 80.  Index 2 (bk64) plays the default. */
static void four(fagen_variant v[4]) {
  for (int k = 0; k < 4; k++) {
    memset(&v[k], 0, sizeof v[k]);
    v[k].op = FAGEN_OP_FWD;
    v[k].head_dim = 128;
    v[k].block_q = 64;
    v[k].block_kv = 32 + 16 * k;
    v[k].warps = 4;
    v[k].stages = 1;
    v[k].dtype = FAGEN_DTYPE_BF16;
    v[k].target.arch = 80;
  }
}

Test(tune_pick, the_fastest_wins_past_the_margin) {
  fagen_variant v[4];
  four(v);
  const double ms[4] = {1.00, 0.90, 1.00, 1.20}; /* index 1: 11% faster than the default */
  int w, r;
  tp_pick(v, ms, 4, 2, 0.02, &w, &r);
  cr_assert_eq(w, 1);
  cr_assert_eq(r, 0, "runner-up %d: the fastest of the others, ties to the earlier name", r);
}

Test(tune_pick, the_default_stays_within_the_margin) {
  fagen_variant v[4];
  four(v);
  const double ms[4] = {1.00, 0.99, 1.005, 1.20}; /* index 1 only 1.5% faster */
  int w, r;
  tp_pick(v, ms, 4, 2, 0.02, &w, &r);
  cr_assert_eq(w, 2);
  cr_assert_eq(r, 1, "runner-up %d: the faster candidate the margin passed over", r);
  tp_pick(v, ms, 4, 2, 0.0, &w, &r); /* no margin: the fastest */
  cr_assert_eq(w, 1);
}

Test(tune_pick, equal_times_go_to_the_earlier_name) {
  fagen_variant v[4];
  four(v);
  const double ms[4] = {2.0, 0.5, 2.0, 0.5};
  cr_assert_eq(tp_fastest(v, ms, 4, -1), 1);
  cr_assert_eq(tp_fastest(v, ms, 4, 1), 3);
  /* the order of the arrays does not matter, only the names */
  fagen_variant sw[4] = {v[3], v[1], v[2], v[0]};
  const double ms2[4] = {0.5, 0.5, 2.0, 2.0};
  cr_assert_eq(tp_fastest(sw, ms2, 4, -1), 1);
}

Test(tune_pick, candidates_without_a_time_never_win) {
  fagen_variant v[4];
  four(v);
  const double ms[4] = {-1, 0, NAN, 3.0}; /* failed, zero, not a number */
  int w, r;
  tp_pick(v, ms, 4, 2, 0.02, &w, &r);
  cr_assert_eq(w, 3, "only index 3 has a time: %d", w);
  cr_assert_eq(r, -1);
  const double none[4] = {-1, -1, -1, -1};
  tp_pick(v, none, 4, 2, 0.02, &w, &r);
  cr_assert_eq(w, -1);
  cr_assert_eq(r, -1);
}

Test(tune_pick, no_default_time_means_no_margin) {
  fagen_variant v[4];
  four(v);
  const double ms[4] = {1.00, 0.995, -1, 1.20};
  int w, r;
  tp_pick(v, ms, 4, 2, 0.02, &w, &r);
  cr_assert_eq(w, 1);
  tp_pick(v, ms, 4, -1, 0.02, &w, &r);
  cr_assert_eq(w, 1);
}

Test(tune_pick, confirmation_needs_half_the_margin) {
  cr_assert(tp_confirms(1.055, 1.0, 0.02), "5.5% faster again: kept");
  cr_assert(tp_confirms(1.010, 1.0, 0.02), "exactly half the margin: kept");
  cr_assert_not(tp_confirms(1.009, 1.0, 0.02), "0.9% faster: below half of 2%");
  cr_assert_not(tp_confirms(0.981, 1.0, 0.02), "slower in the second timing: rejected");
  cr_assert_not(tp_confirms(-1, 1.0, 0.02), "the default's timing failed");
  cr_assert_not(tp_confirms(1.0, -1, 0.02), "the winner's timing failed");
  cr_assert_not(tp_confirms(1.0, NAN, 0.02));
  cr_assert(tp_confirms(1.0, 1.0, 0.0), "no margin: equal is enough");
}
