/* fagen-bench's matching of --variant to cells (bench/fg_bench_case.c) and
 * the timer that fagen-bench and fagen-autotune share (bench/fg_timing.c). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fg_bench_case.h"
#include "fg_test.h"
#include "fg_timing.h"

/* A launch that spends 20 ms on the host before it queues a 64 KiB memset. */
static int slow_launch(void *user, int k, int set, char *err, size_t errsize) {
  const struct timespec d = {0, 20 * 1000 * 1000};
  nanosleep(&d, NULL);
  cudaError_t e = cudaMemsetAsync(user, k + set, 1 << 16, 0);
  if (e != cudaSuccess) {
    snprintf(err, errsize, "cudaMemsetAsync: %s", cudaGetErrorString(e));
    return -1;
  }
  return 0;
}

/* Regression: the tuner's forward timing (fg_cell_time_many) started its
 * first event before the host had validated, selected and launched the call,
 * so every forward time in a tuning table included that host work (~6 us on
 * an H100 machine, more on a busy CPU).  Every timing now goes through
 * fg_time_many's host gate: 20 ms on the host before each launch must not
 * show in the times. */
Test(bench_case, host_time_before_a_launch_is_not_timed) {
  const char *why;
  if (!fg_test_gpu_available(&why)) cr_skip_test("%s", why);
  void *buf = NULL;
  cr_assert_eq(cudaMalloc(&buf, 1 << 16), cudaSuccess);
  double ms[2] = {-1, -1};
  char err[256] = "";
  cr_assert_eq(fg_time_many(2, 1, 3, slow_launch, buf, ms, err, sizeof err), 0, "%s", err);
  cudaFree(buf);
  for (int k = 0; k < 2; k++) {
    cr_log_info("item %d: %.4f ms", k, ms[k]);
    cr_assert(ms[k] >= 0 && ms[k] < 5.0, "item %d timed %.3f ms: the host's sleep was counted", k,
              ms[k]);
  }
}

/* No items: nothing launched, success (a fagen-bench cell whose variants all
 * failed their check still prints its rows); no repetitions: an error. */
Test(bench_case, timer_without_items_or_reps) {
  double ms[1] = {-1};
  char err[256] = "";
  cr_assert_eq(fg_time_many(0, 1, 3, slow_launch, NULL, ms, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ms[0], -1);
  cr_assert_eq(fg_time_many(1, 1, 0, slow_launch, NULL, ms, err, sizeof err), -1);
  cr_assert(strstr(err, "0 reps"), "%s", err);
  cr_assert_eq(fg_time_many(-1, 1, 3, slow_launch, NULL, ms, err, sizeof err), -1);
  cr_assert(strstr(err, "-1 items"), "%s", err);
}

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

/* Lengths of sequence b of a packed case. */
static int seq_len(const fg_case *c, int b) { return c->cu[b + 1] - c->cu[b]; }

/* --varlen classes: S, S/2, S/4, S/8 taken in turn while they fit, shuffled
 * with a seed fixed per S; its base is one dense case per length reading
 * consecutive rows, with the same visible pairs in all. */
Test(bench_case, length_classes_and_their_separate_batches) {
  fg_feature_opts fo;
  memset(&fo, 0, sizeof fo);
  fo.varlen = FG_VARLEN_CLASSES;
  char err[256] = "";
  fg_case c, again;
  cr_assert_eq(fg_case_init(&c, FG_MODE_FWD, 0, FAGEN_DTYPE_BF16, 4, 4096, 16, 128, 1, &fo, err,
                            sizeof err),
               0, "%s", err);
  /* 4096 2048 1024 512 4096 2048 1024 512, then only 1024 fits the 1024 left */
  cr_assert_eq(c.batch, 9);
  cr_assert_eq(c.cu[c.batch], 16384);
  int count[13] = {0}, descending = 1;
  for (int b = 0; b < c.batch; b++) {
    const int l = seq_len(&c, b);
    cr_assert(l == 512 || l == 1024 || l == 2048 || l == 4096, "length %d", l);
    for (int k = 0; k < 13; k++) count[k] += l == 1 << k;
    if (b > 0 && l > seq_len(&c, b - 1)) descending = 0;
  }
  cr_assert(count[12] == 2 && count[11] == 2 && count[10] == 3 && count[9] == 2);
  cr_assert_not(descending, "the classes are interleaved, not sorted");
  cr_assert_eq(fg_case_init(&again, FG_MODE_FWD, 0, FAGEN_DTYPE_BF16, 4, 4096, 16, 128, 1, &fo,
                            err, sizeof err),
               0);
  cr_assert_arr_eq(again.cu, c.cu, sizeof(int32_t) * 10, "the same sequences in every run");
  fg_case_free(&again);

  fg_case parts[FG_CASE_MAX_PARTS];
  int n = 0;
  cr_assert_eq(fg_case_parts(&c, parts, &n, err, sizeof err), 0, "%s", err);
  cr_assert_eq(n, 4);
  const int len[4] = {4096, 2048, 1024, 512}, batch[4] = {2, 2, 3, 2};
  int row = 0;
  double pairs = 0;
  for (int k = 0; k < n; k++) {
    cr_assert_eq(parts[k].seqlen, len[k]);
    cr_assert_eq(parts[k].batch, batch[k]);
    cr_assert_eq(parts[k].row0, row, "part %d reads the rows after part %d", k, k - 1);
    cr_assert_null(parts[k].cu, "a dense batch");
    cr_assert_not(fg_features_any(&parts[k].fo));
    cr_assert(parts[k].causal && parts[k].heads == 16 && parts[k].head_dim == 128);
    row += parts[k].rows;
    pairs += parts[k].pairs;
    fg_case_free(&parts[k]);
  }
  cr_assert_eq(row, c.rows, "together as many rows as the packed buffer");
  cr_assert_eq(pairs, c.pairs, "the same visible pairs");
  fg_case_free(&c);

  /* One sequence per cell at B = 1: one class, one part. */
  cr_assert_eq(fg_case_init(&c, FG_MODE_BWD, 0, FAGEN_DTYPE_BF16, 1, 16384, 8, 256, 0, &fo, err,
                            sizeof err),
               0);
  cr_assert_eq(c.batch, 1);
  cr_assert_eq(fg_case_parts(&c, parts, &n, err, sizeof err), 0, "%s", err);
  cr_assert(n == 1 && parts[0].batch == 1 && parts[0].seqlen == 16384 && parts[0].mode == FG_MODE_BWD);
  fg_case_free(&parts[0]);
  fg_case_free(&c);

  /* Only a classes case has parts. */
  fo.varlen = FG_VARLEN_MIXED;
  cr_assert_eq(fg_case_init(&c, FG_MODE_FWD, 0, FAGEN_DTYPE_BF16, 4, 4096, 16, 128, 0, &fo, err,
                            sizeof err),
               0);
  cr_assert_eq(fg_case_parts(&c, parts, &n, err, sizeof err), -1);
  cr_assert_eq(n, 0);
  cr_assert(strstr(err, "--varlen classes"), "%s", err);
  fg_case_free(&c);
}

/* A group counts its calls: fewer than one is refused before any launch. */
Test(bench_case, timer_groups_need_calls) {
  const fg_case *cases[1] = {NULL};
  const fagen_variant *variants[1] = {NULL};
  const int counts[1] = {0};
  double ms[1] = {-1};
  char err[256] = "";
  cr_assert_eq(fg_case_time_groups(NULL, cases, variants, counts, 1, 1, 3, ms, err, sizeof err),
               -1);
  cr_assert(strstr(err, "0 calls"), "%s", err);
  cr_assert_eq(ms[0], -1);
}

/* On a GPU: a part reads its own rows (checked against the float64
 * reference over the same rows), and a group of three calls takes about
 * three times one. */
Test(bench_case, parts_read_their_rows_and_groups_time_every_call, .timeout = 300) {
  const char *why;
  if (!fg_test_gpu_available(&why)) cr_skip_test("%s", why);
  fg_feature_opts fo;
  memset(&fo, 0, sizeof fo);
  fo.varlen = FG_VARLEN_CLASSES;
  char err[512] = "";
  fg_case c, parts[FG_CASE_MAX_PARTS];
  int n = 0;
  cr_assert_eq(fg_case_init(&c, FG_MODE_FWD, 0, FAGEN_DTYPE_BF16, 8, 1024, 8, 64, 1, &fo, err,
                            sizeof err),
               0, "%s", err);
  cr_assert_eq(fg_case_parts(&c, parts, &n, err, sizeof err), 0, "%s", err);
  cr_assert_eq(n, 4);
  fagen_ctx *ctx = NULL;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  uint64_t rng = 7;
  fg_inputs in;
  cr_assert_eq(fg_inputs_alloc(&in, FAGEN_DTYPE_BF16, (size_t)c.rows * 8 * 64, &rng, err,
                               sizeof err),
               0, "%s", err);
  for (int k = 0; k < n; k++) {
    cr_assert_eq(fg_case_alloc(ctx, &parts[k], &in, err, sizeof err), 0, "%s", err);
    double e = fg_case_check(ctx, &parts[k], NULL, &rng, err, sizeof err);
    cr_assert(e >= 0 && e < 1e-2, "part %d (rows from %d): error %g %s", k, parts[k].row0, e, err);
  }
  const fg_case *tc[4] = {&parts[0], &parts[0], &parts[0], &parts[0]};
  const fagen_variant *tv[4] = {NULL, NULL, NULL, NULL};
  const int counts[2] = {1, 3};
  double ms[2] = {0, 0};
  cr_assert_eq(fg_case_time_groups(ctx, tc, tv, counts, 2, 2, 10, ms, err, sizeof err), 0, "%s",
               err);
  cr_log_info("one call %.4f ms, three %.4f ms", ms[0], ms[1]);
  cr_assert(ms[0] > 0 && ms[1] > 2.0 * ms[0] && ms[1] < 4.0 * ms[0], "one %.4f, three %.4f", ms[0],
            ms[1]);
  for (int k = 0; k < n; k++) fg_case_free(&parts[k]);
  fg_case_free(&c);
  fg_inputs_free(&in);
  fagen_ctx_destroy(ctx);
}
