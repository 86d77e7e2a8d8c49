/* tune_measure: how fagen-autotune runs the kernels of a case, for the
 * forward families (fg_cell: O) and the backward ones (fg_case: dQ, dK, dV)
 * alike — the plain call's heuristic choice, the check of a candidate
 * against the default on an odd shape, the timing on the standard grid's
 * shape, and the FLOPs.  Public fagen API and the CUDA runtime only. */
#ifndef TUNE_MEASURE_H
#define TUNE_MEASURE_H

#include <stddef.h>
#include <stdint.h>

#include "fagen.h"
#include "fg_bench_case.h"
#include "fg_timing.h"

/* What a case measures: an op (kernel family) on the standard grid's shape
 * for (dtype, head_dim, causal, seqlen): B*S = 16384 tokens, hidden 2048;
 * with `features` (FAGEN_FEATURE_* bits) on, at the values of tm_feature_opts. */
typedef struct tm_shape {
  fagen_op op;
  fagen_dtype dtype;
  int head_dim, causal, seqlen;
  unsigned features;
} tm_shape;

/* The run-time values a case with features is measured at (fagen-bench's
 * options): softcap 30; varlen: the B*S tokens packed in sequences of
 * S/8..S tokens drawn from a seed fixed per S (fagen-bench --varlen mixed);
 * window: left S/4 and right S/4 (0 when causal); ALiBi slopes
 * 2^(-8 (h+1) / H); dropout rate 0.1. */
void tm_feature_opts(const tm_shape *s, fg_feature_opts *fo);

/* 1 for the backward families (bwd, bwddet, bwdwg). */
int tm_is_backward(fagen_op op);

/* The variant the call of s's shape (with s's features) selects on a device
 * of dc's target with no table (the heuristic): the forward's select for
 * forward ops, the backward's (deterministic for bwddet) for backward ones.
 * Its op may differ from s->op (e.g. fwdwg where s->op is fwd).  Returns 0,
 * or -1 with a message in err. */
int tm_select_heuristic(fagen_ctx *ctx, const fagen_device_class *dc, const tm_shape *s,
                    fagen_variant *out, char *err, size_t errsize);

/* The check of a group of candidates (one op, dtype, head_dim, causal)
 * against the default's output on an odd shape: the forward 2 x 333 queries
 * x 257 keys, GQA 4:2; the backward 2 x 333 x 333, 4 heads (ragged tiles
 * each way; every gradient compared, NaN-poisoned first).  With features,
 * each candidate (the default too) is checked against the float64 reference
 * instead (fg_case_check, fagen-bench's check and limits) on 2 sequences of
 * 333 tokens (packed where varlen), 4 heads. */
typedef struct tm_check {
  int backward, features;
  fagen_dtype dtype;
  fg_cell cell;        /* forward */
  fg_case bc;          /* backward */
  fg_inputs in;        /* backward inputs, or with features the check's */
  uint64_t rng;        /* with features: the reference check's row sampling */
  uint16_t *ref[3];    /* the default's O, or dQ, dK, dV */
  size_t n;            /* elements per output */
} tm_check;

/* Runs the default on the check shape.  Returns 0, or -1 (err). */
int tm_check_open(tm_check *k, fagen_ctx *ctx, const tm_shape *s, const fagen_variant *deflt,
                  uint64_t *rng, char *err, size_t errsize);
/* 1 if v runs and every output is within tolerance of the default's
 * (relative L2: bf16 2e-2, fp16 4e-3 forward and 1e-2 backward), or with
 * features of the reference (largest relative error: bf16 1e-2, fp16 2e-3
 * forward and 5e-3 backward), else 0. */
int tm_check_agrees(tm_check *k, fagen_ctx *ctx, const fagen_variant *v);
void tm_check_close(tm_check *k);

/* Random inputs shared by every timed case of a dtype (the standard grid's
 * cells all have 16384 x 2048 elements per tensor), allocated on first use. */
typedef struct tm_inputs {
  fg_buffers fwd[2]; /* [bf16, fp16] */
  fg_inputs bwd[2];
} tm_inputs;

/* Median milliseconds of each of v[0..n) in case s (calls interleaved, see
 * fg_cell_time_many and fg_case_time_many).  Returns 0, or -1 (err). */
int tm_time(fagen_ctx *ctx, tm_inputs *in, const tm_shape *s, const fagen_variant *const *v, int n,
            int warmup, int reps, uint64_t *rng, double *ms, char *err, size_t errsize);
void tm_inputs_free(tm_inputs *in);

/* FLOPs of one call: the forward's 4 B H S^2 d (halved when causal), the
 * backward 2.5x that (as fagen-bench counts); with varlen or a window, 4 H d
 * per visible (query, key) pair instead. */
double tm_flops(const tm_shape *s);

#endif
