/* fg_timing: measuring forward attention the same way in fagen-bench and
 * fagen-autotune — a grid cell's buffers (two input sets, alternated so that
 * no run finds its inputs in L2), CUDA-event timing (warm-up, median), and
 * output comparisons.  Uses the CUDA runtime and the public fagen API. */
#ifndef FG_TIMING_H
#define FG_TIMING_H

#include <stddef.h>
#include <stdint.h>

#include "fagen.h"

typedef struct fg_cell {
  fagen_dtype dtype;
  int B, Sq, Sk, Hq, Hkv, D, causal;
  size_t nq, nk;
  void *dev[2][3]; /* [input set][q, k, v] */
  void *o;
  uint16_t *host[3]; /* input set 0, kept when asked for (references) */
} fg_cell;

/* The standard grid's cell: B*S = 16384 tokens, hidden 2048. */
void fg_cell_standard(fg_cell *c, fagen_dtype dtype, int head_dim, int seqlen, int causal);

/* Inputs shared by many cells: two sets of q, k, v and an output of n
 * elements each, filled once.  Every cell of the standard grid has the same
 * element count (16384 tokens x hidden 2048), so one fill serves them all. */
typedef struct fg_buffers {
  fagen_dtype dtype;
  size_t n;
  void *dev[2][3];
  void *o;
} fg_buffers;

int fg_buffers_alloc(fg_buffers *b, fagen_dtype dtype, size_t n, uint64_t *rng, char *err,
                     size_t errsize);
void fg_buffers_free(fg_buffers *b);
/* Points cell c at b's memory (c must need no more than b->n elements per
 * tensor; its dtype must be b's).  Returns 0, or -1 if it does not fit. */
int fg_cell_use(fg_cell *c, const fg_buffers *b);

/* Allocates and fills the inputs at random (q drawn twice as wide, so rows
 * are peaked).  Returns 0, or -1 with a message in err. */
int fg_cell_alloc(fg_cell *c, uint64_t *rng, int keep_host, char *err, size_t errsize);
void fg_cell_free(fg_cell *c);

/* Arguments for input set `set`, forcing `variant` when not NULL. */
void fg_cell_args(const fg_cell *c, int set, const fagen_variant *variant, fagen_attention_args *a);

/* The median of v[0..n) (n >= 1), sorting v in place. */
double fg_median_ms(float *v, int n);

/* Queues the timed work of item k (a variant, a case) on input set `set`
 * (0 or 1) on the default stream.  Returns 0, or -1 with a message in err. */
typedef int fg_launch_fn(void *user, int k, int set, char *err, size_t errsize);

/* The timer every measurement goes through: median milliseconds of items
 * 0..n), each launched by `launch`, after `warmup` rounds, over `reps`
 * rounds, the items interleaved (the order rotating by one each round) and
 * the input set alternating by round.  Each call is timed between two CUDA
 * events behind a host gate: a host function on the stream that returns only
 * once the host has queued the events and the launch, so the host's own time
 * (validation, selection, launch, a busy CPU) is not counted.  (Without it
 * the tuner's forward times included the ~6 us a call spends on the host.)
 * ms[k] gets item k's median.  n = 0 times nothing and returns 0.  Returns
 * 0, or -1 (message in err). */
int fg_time_many(int n, int warmup, int reps, fg_launch_fn *launch, void *user, double *ms,
                 char *err, size_t errsize);

/* Median milliseconds of one call after `warmup` calls, over `reps` calls,
 * each timed with CUDA events, for n variants: their calls interleaved (the
 * order rotating by one each round) so that clock and temperature drift hit
 * all of them alike; ms[k] gets variant k's median.  (Timed one after the
 * other, the first candidate, the default, had the GPU coolest: on an H100 at
 * d64, S = 4096 the tuner kept it although interleaved timing put 192-row
 * tiles 1.11x ahead.)  Timed by fg_time_many.  Returns 0, or -1 (message
 * in err) on failure. */
int fg_cell_time_many(fagen_ctx *ctx, const fg_cell *c, const fagen_variant *const *variants, int n,
                      int warmup, int reps, double *ms, char *err, size_t errsize);

/* Runs `variant` on input set 0 and copies O to host (n = B*Sq*Hq*D
 * elements); O is poisoned first.  Returns 0 or -1. */
int fg_cell_run(fagen_ctx *ctx, const fg_cell *c, const fagen_variant *variant, uint16_t *o_host,
                char *err, size_t errsize);

/* FLOPs of the cell (4 B H Sq Sk d, halved when causal and square). */
double fg_cell_flops(const fg_cell *c);

#endif
