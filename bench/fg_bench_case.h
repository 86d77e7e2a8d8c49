/* fg_bench_case: one fagen-bench measurement — a shape, the masks and score
 * features of fagen_attention_features, and what is timed (forward,
 * backward, or both) — with its buffers, its check against the float64
 * reference and its timing.  CUDA runtime and the public fagen API. */
#ifndef FG_BENCH_CASE_H
#define FG_BENCH_CASE_H

#include <stddef.h>
#include <stdint.h>

#include "fagen.h"

typedef enum fg_mode { FG_MODE_FWD, FG_MODE_BWD, FG_MODE_FWDBWD } fg_mode;

/* --varlen: none; mixed lengths packed; the same tokens as equal-length
 * sequences through the packed path; or length classes packed (S, S/2, S/4,
 * S/8 in turn, shuffled), whose base is the same sequences run as separate
 * equal-length batches (fg_case_parts). */
typedef enum fg_varlen {
  FG_VARLEN_NONE,
  FG_VARLEN_MIXED,
  FG_VARLEN_EQUAL,
  FG_VARLEN_CLASSES
} fg_varlen;

/* The feature options of the command line. */
typedef struct fg_feature_opts {
  fg_varlen varlen;
  int seqused; /* padded batch with per-sequence valid lengths */
  int window, window_left, window_right;
  float softcap; /* 0: off */
  int alibi;     /* slopes 2^(-8 (h + 1) / H) */
  float dropout; /* dropout rate, 0: off (seed FG_BENCH_DROPOUT_SEED, offset 0) */
} fg_feature_opts;

#define FG_BENCH_DROPOUT_SEED 0x5eedf00dull

/* Whether any feature is on. */
int fg_features_any(const fg_feature_opts *fo);

/* Random inputs shared by every case of a run: two sets of q, k, v and dO of
 * n elements each, and host copies of set 0 (the reference reads them). */
typedef struct fg_inputs {
  fagen_dtype dtype;
  size_t n;
  void *dev[2][4]; /* [set][q, k, v, dout] */
  uint16_t *host[4];
} fg_inputs;

int fg_inputs_alloc(fg_inputs *in, fagen_dtype dtype, size_t n, uint64_t *rng, char *err,
                    size_t errsize);
void fg_inputs_free(fg_inputs *in);

typedef struct fg_case {
  fg_mode mode;
  int deterministic;
  fagen_dtype dtype;
  int batch, seqlen, heads, head_dim, causal; /* batch: sequences; seqlen: the longest */
  fg_feature_opts fo;
  int rows;              /* rows of each tensor: packed tokens, else batch * seqlen */
  int row0;              /* first row of the shared inputs this case reads (0, or a part's) */
  int32_t *cu;           /* host: packed offsets [batch + 1], or NULL */
  int32_t *used;         /* host: --seqused valid lengths [batch], or NULL */
  float *slopes;         /* host: ALiBi slopes [heads], or NULL */
  double pairs;          /* visible (query, key) pairs of one head, counted exactly */
  /* device (fg_case_alloc) */
  const fg_inputs *in;
  int32_t *d_cu, *d_used;
  float *d_slopes;
  void *o[2];            /* the forward's output per input set */
  float *lse[2];         /* bwd modes: the forward's LSE per input set */
  void *grad[3];         /* dq, dk, dv */
  void *ws;              /* backward workspace, allocated once */
  size_t ws_bytes;
} fg_case;

/* A case of `batch` sequences of (at most) seqlen tokens; mixed lengths are
 * drawn from a fixed seed (the same in every run), so that B*S tokens are
 * split into sequences of S/8..S tokens; length classes take S, S/2, S/4 and
 * S/8 in turn, skipping those longer than the tokens left (the rest, if no
 * class fits, is one more sequence), in an order shuffled with that seed.
 * Host state only.  Returns 0, or -1 with a message. */
int fg_case_init(fg_case *c, fg_mode mode, int deterministic, fagen_dtype dtype, int batch,
                 int seqlen, int heads, int head_dim, int causal, const fg_feature_opts *fo,
                 char *err, size_t errsize);

/* The same case with the features off, except that --varlen mixed becomes
 * --varlen equal (the same tokens in B sequences of length S): what a
 * feature's cost is measured against.  Host state only. */
int fg_case_base(const fg_case *c, fg_case *base, char *err, size_t errsize);

/* Most parts fg_case_parts returns. */
#define FG_CASE_MAX_PARTS 8

/* The base of a --varlen classes case: its sequences run as separate
 * equal-length batches, one dense case per distinct length (longest first,
 * batch = how many sequences have it, features off, causal as c), reading
 * consecutive rows of the inputs (row0) so that together they read as much
 * memory as the packed call.  Writes up to FG_CASE_MAX_PARTS cases to parts
 * and their count to *n.  Host state only; free each part.  Returns 0, or -1
 * with a message (c is not a classes case, or has too many lengths). */
int fg_case_parts(const fg_case *c, fg_case *parts, int *n, char *err, size_t errsize);

/* Device arrays, outputs and the backward workspace; in --mode bwd also the
 * forward's O and LSE of both input sets (the selected forward variant).
 * in must hold at least (row0 + rows) * heads * head_dim elements. */
int fg_case_alloc(fagen_ctx *ctx, fg_case *c, const fg_inputs *in, char *err, size_t errsize);
void fg_case_free(fg_case *c);

/* Arguments for input set `set` forcing variant (NULL: selected). */
void fg_case_fwd_args(const fg_case *c, int set, const fagen_variant *variant,
                      fagen_attention_args *a);
void fg_case_bwd_args(const fg_case *c, int set, const fagen_variant *variant,
                      fagen_attention_bwd_args *b);

/* The variant the timed operation would run (the forward in fwd mode, the
 * backward otherwise) on a device of class `device` (NULL: this one). */
fagen_status fg_case_select(fagen_ctx *ctx, const fg_case *c, const fagen_device_class *device,
                            fagen_variant *out, fagen_select_info *info);

/* Whether a variant of operation `op` can be timed in this case: the
 * deterministic backward takes bwddet, the other backward modes either
 * atomic backward family (bwd or, on sm_90a, bwdwg), fwd mode either forward
 * family (mma.sync or, on sm_90a, wgmma). */
int fg_case_takes_op(const fg_case *c, fagen_op op);

/* 1 if the forced variant v can run in case c, whose selected variant is
 * sel: an op the case takes, its dtype, causal, features and target, and a
 * head_dim the call accepts (the forward runs a larger compiled head_dim, the
 * backward only its own, sel's). */
int fg_case_fits_variant(const fg_case *c, const fagen_variant *v, const fagen_variant *sel);

/* The ops whose tile candidates --candidates times in this case, given its
 * selected variant sel: sel's op, and in the non-deterministic backward
 * modes on sm_90a the other atomic backward family too (bwdwg only where the
 * call has no feature).  Writes them to ops and returns how many (1 or 2). */
int fg_case_candidate_ops(const fg_case *c, const fagen_variant *sel, fagen_op ops[2]);

/* FLOPs of the timed work: 4 * heads * d per visible pair for cells with a
 * window or sequence lengths, else 4 B H S^2 d (halved when causal); 2.5x
 * for the backward, 3.5x for forward + backward. */
double fg_case_flops(const fg_case *c);

/* "window(4096,0) softcap(30) ..." or "-". */
void fg_case_describe(const fg_case *c, char *buf, size_t size);

/* Checks the timed work of `variant` against the float64 reference:
 * forward: sampled output rows of this case; backward: every gradient of a
 * reduced copy (2 sequences, 2 heads, S at most 512, window scaled with S)
 * run with the same variant, plus NaN poisoning of this case's full-size
 * gradients.  Returns the largest relative error (INFINITY for NaN or
 * unwritten output), or -1 with a message when a call fails. */
double fg_case_check(fagen_ctx *ctx, const fg_case *c, const fagen_variant *variant,
                     uint64_t *rng, char *err, size_t errsize);

/* Runs the backward of input set 0 with `variant` (NULL: selected), dq, dk
 * and dv poisoned with NaN first, and reads them back into got[0..2]
 * (malloc'ed, rows * heads * head_dim elements each; the caller frees them).
 * c must be a backward case, allocated.  Returns 0, or -1 with a message
 * (got[] all NULL). */
int fg_case_backward_grads(fagen_ctx *ctx, const fg_case *c, const fagen_variant *variant,
                           uint16_t *got[3], char *err, size_t errsize);

/* Median milliseconds of the timed work over reps calls after warmup, each
 * between two CUDA events, input sets alternated, for n (case, variant)
 * pairs (variant NULL: selected).  The stream is held by a host gate until
 * every launch of the call is queued, so the time is the GPU's alone (no
 * launch or validation cost).  The pairs' calls are interleaved (the order
 * rotating by one each round), so that clock and temperature changes hit all
 * of them alike (timed one after the other, the same variant measured up to
 * 1.08x against itself at S = 16384 on an H100); ms[k] gets pair k's median.
 * Timed by fg_time_many (fg_timing.h).  Returns 0, or -1 (err) on failure. */
int fg_case_time_many(fagen_ctx *ctx, const fg_case *const *cases,
                      const fagen_variant *const *variants, int n, int warmup, int reps,
                      double *ms, char *err, size_t errsize);

/* As fg_case_time_many, over n items of which item k is a group of
 * counts[k] >= 1 consecutive (case, variant) pairs, launched one after the
 * other between the same two events (a --varlen classes base: one call per
 * length); ms[k] gets item k's median.  counts NULL: one pair each. */
int fg_case_time_groups(fagen_ctx *ctx, const fg_case *const *cases,
                        const fagen_variant *const *variants, const int *counts, int n,
                        int warmup, int reps, double *ms, char *err, size_t errsize);

#endif
