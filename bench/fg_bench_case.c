#include "fg_bench_case.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_ref.h"
#include "fg_timing.h"

#define FG_CU(call)                                                              \
  do {                                                                           \
    cudaError_t e_ = (call);                                                     \
    if (e_ != cudaSuccess) {                                                     \
      snprintf(err, errsize, "%s failed: %s", #call, cudaGetErrorString(e_));     \
      return -1;                                                                 \
    }                                                                            \
  } while (0)

/* The reduced copy that checks the backward: small enough for the float64
 * reference (about a second), large enough for several tiles each way. */
enum { FG_CHECK_BATCH = 2, FG_CHECK_HEADS = 2, FG_CHECK_SEQLEN = 512 };
/* Sampled query rows of the forward check. */
enum { FG_CHECK_ROWS = 12 };

int fg_features_any(const fg_feature_opts *fo) {
  return fo->varlen != FG_VARLEN_NONE || fo->seqused || fo->window || fo->softcap > 0 ||
         fo->alibi || fo->dropout > 0;
}

/* ---- inputs -------------------------------------------------------------- */

/* A device copy of n bytes of host (NULL stays NULL). */
static int fg_upload(void **dev, const void *host, size_t n, char *err, size_t errsize) {
  *dev = NULL;
  if (!host) return 0;
  FG_CU(cudaMalloc(dev, n));
  FG_CU(cudaMemcpy(*dev, host, n, cudaMemcpyHostToDevice));
  return 0;
}

int fg_inputs_alloc(fg_inputs *in, fagen_dtype dtype, size_t n, uint64_t *rng, char *err,
                    size_t errsize) {
  memset(in, 0, sizeof *in);
  in->dtype = dtype;
  in->n = n;
  /* set 1 is drawn into a scratch buffer; set 0 into the kept host copies */
  uint16_t *scratch = malloc(n * 2);
  for (int t = 0; t < 4; t++) in->host[t] = malloc(n * 2);
  int rc = -1;
  if (!scratch || !in->host[0] || !in->host[1] || !in->host[2] || !in->host[3]) {
    snprintf(err, errsize, "out of host memory");
    goto done;
  }
  for (int set = 0; set < 2; set++)
    for (int t = 0; t < 4; t++) {
      uint16_t *x = set == 0 ? in->host[t] : scratch;
      const float amp = t == 0 ? 2.0f : 1.0f; /* q drawn twice as wide: peaked rows */
      for (size_t i = 0; i < n; i++) x[i] = fg_elem_from_float(dtype, amp * fg_rand_uniform(rng));
      if (fg_upload(&in->dev[set][t], x, n * 2, err, errsize) != 0) goto done;
    }
  rc = 0;
done:
  free(scratch);
  return rc;
}

void fg_inputs_free(fg_inputs *in) {
  for (int set = 0; set < 2; set++)
    for (int t = 0; t < 4; t++) cudaFree(in->dev[set][t]);
  for (int t = 0; t < 4; t++) free(in->host[t]);
  memset(in, 0, sizeof *in);
}

/* ---- shape and lengths ---------------------------------------------------- */

/* A length in [max(1, S/8), S], uniform. */
static int fg_draw_length(uint64_t *rng, int seqlen) {
  const int lo = seqlen / 8 > 0 ? seqlen / 8 : 1;
  double u = 0.5 * ((double)fg_rand_uniform(rng) + 1.0); /* [0, 1) */
  int len = lo + (int)(u * (seqlen - lo + 1));
  return len < seqlen ? len : seqlen;
}

/* Lengths are drawn from a seed fixed per S, so that every run (and every
 * variant, and the base) measures the same sequences. */
static uint64_t fg_length_seed(int seqlen) { return 0x9e3779b97f4a7c15ull ^ (uint64_t)seqlen; }

/* The next length of --varlen classes: S, S/2, S/4, S/8 in turn (*turn
 * says which is next), skipping those longer than `left`; `left` itself
 * when none fits. */
static int fg_class_length(int seqlen, int left, int *turn) {
  for (int t = 0; t < 4; t++) {
    int len = seqlen >> *turn;
    *turn = (*turn + 1) % 4;
    if (len < 1) len = 1;
    if (len <= left) return len;
  }
  return left;
}

/* Shuffles the order of the n sequences of c->cu (Fisher-Yates over their
 * lengths, then the offsets rebuilt).  Returns 0, or -1 with a message. */
static int fg_shuffle_sequences(fg_case *c, int n, uint64_t *rng, char *err, size_t errsize) {
  int32_t *len = malloc(sizeof(int32_t) * (size_t)n);
  if (!len) {
    snprintf(err, errsize, "out of host memory");
    return -1;
  }
  for (int k = 0; k < n; k++) len[k] = c->cu[k + 1] - c->cu[k];
  for (int i = n - 1; i > 0; i--) {
    double u = 0.5 * ((double)fg_rand_uniform(rng) + 1.0); /* [0, 1) */
    int j = (int)(u * (i + 1));
    if (j > i) j = i;
    const int32_t t = len[i];
    len[i] = len[j], len[j] = t;
  }
  for (int k = 0; k < n; k++) c->cu[k + 1] = c->cu[k] + len[k];
  free(len);
  return 0;
}

/* Packed offsets: tokens split into sequences of drawn lengths (mixed),
 * length classes (shuffled), or of seqlen each (equal).  Sets c->cu and
 * c->batch. */
static int fg_case_pack(fg_case *c, int tokens, char *err, size_t errsize) {
  const int lo = c->seqlen / 8 > 0 ? c->seqlen / 8 : 1;
  const int most = tokens / lo + 2;
  c->cu = malloc(sizeof(int32_t) * (size_t)most);
  if (!c->cu) {
    snprintf(err, errsize, "out of host memory");
    return -1;
  }
  uint64_t rng = fg_length_seed(c->seqlen);
  int n = 0, turn = 0;
  c->cu[0] = 0;
  while (c->cu[n] < tokens) {
    const int left = tokens - c->cu[n];
    int len = c->seqlen;
    if (c->fo.varlen == FG_VARLEN_MIXED) len = fg_draw_length(&rng, c->seqlen);
    if (c->fo.varlen == FG_VARLEN_CLASSES) len = fg_class_length(c->seqlen, left, &turn);
    if (len > left) len = left; /* the last takes the rest */
    c->cu[n + 1] = c->cu[n] + len;
    n++;
  }
  c->batch = n;
  if (c->fo.varlen == FG_VARLEN_CLASSES) return fg_shuffle_sequences(c, n, &rng, err, errsize);
  return 0;
}

static void fg_case_lengths(const fg_case *c, int b, int *len_q, int *len_k) {
  int len = c->seqlen;
  if (c->cu) len = c->cu[b + 1] - c->cu[b];
  if (c->used) len = c->used[b];
  *len_q = *len_k = len; /* self-attention: queries and keys alike */
}

/* Keys query row i sees among lk keys (fagen.h's window and causal rules,
 * bottom-right aligned with d = lk - lq), counted from the row's interval. */
static int64_t fg_row_visible(const fg_case *c, int i, int lq, int lk) {
  const int64_t d = (int64_t)lk - lq;
  int64_t lo = 0, hi = lk - 1;
  if (c->causal) hi = i + d < hi ? i + d : hi; /* causal: the right extent is 0 */
  else if (c->fo.window && c->fo.window_right >= 0 && i + d + c->fo.window_right < hi)
    hi = i + d + c->fo.window_right;
  if (c->fo.window && c->fo.window_left >= 0 && i + d - c->fo.window_left > lo)
    lo = i + d - c->fo.window_left;
  return hi >= lo ? hi - lo + 1 : 0;
}

static double fg_case_count_pairs(const fg_case *c) {
  double pairs = 0;
  for (int b = 0; b < c->batch; b++) {
    int lq, lk;
    fg_case_lengths(c, b, &lq, &lk);
    for (int i = 0; i < lq; i++) pairs += (double)fg_row_visible(c, i, lq, lk);
  }
  return pairs;
}

int fg_case_init(fg_case *c, fg_mode mode, int deterministic, fagen_dtype dtype, int batch,
                 int seqlen, int heads, int head_dim, int causal, const fg_feature_opts *fo,
                 char *err, size_t errsize) {
  memset(c, 0, sizeof *c);
  c->mode = mode;
  c->deterministic = deterministic;
  c->dtype = dtype;
  c->batch = batch;
  c->seqlen = seqlen;
  c->heads = heads;
  c->head_dim = head_dim;
  c->causal = causal;
  c->fo = *fo;
  c->rows = batch * seqlen;
  if (fo->varlen != FG_VARLEN_NONE && fg_case_pack(c, batch * seqlen, err, errsize) != 0)
    return -1;
  if (fo->seqused) {
    c->used = malloc(sizeof(int32_t) * (size_t)batch);
    if (!c->used) {
      snprintf(err, errsize, "out of host memory");
      return -1;
    }
    uint64_t rng = fg_length_seed(seqlen);
    for (int b = 0; b < batch; b++) c->used[b] = fg_draw_length(&rng, seqlen);
  }
  if (fo->alibi) {
    c->slopes = malloc(sizeof(float) * (size_t)heads);
    if (!c->slopes) {
      snprintf(err, errsize, "out of host memory");
      return -1;
    }
    for (int h = 0; h < heads; h++) c->slopes[h] = (float)exp2(-8.0 * (h + 1) / heads);
  }
  c->pairs = fg_case_count_pairs(c);
  return 0;
}

int fg_case_base(const fg_case *c, fg_case *base, char *err, size_t errsize) {
  fg_feature_opts none;
  memset(&none, 0, sizeof none);
  if (c->fo.varlen == FG_VARLEN_MIXED) none.varlen = FG_VARLEN_EQUAL;
  return fg_case_init(base, c->mode, c->deterministic, c->dtype, c->rows / c->seqlen, c->seqlen,
                      c->heads, c->head_dim, c->causal, &none, err, errsize);
}

int fg_case_parts(const fg_case *c, fg_case *parts, int *n, char *err, size_t errsize) {
  *n = 0;
  if (c->fo.varlen != FG_VARLEN_CLASSES || !c->cu) {
    snprintf(err, errsize, "separate batches are the base of --varlen classes only");
    return -1;
  }
  fg_feature_opts none;
  memset(&none, 0, sizeof none);
  int row0 = 0, done = 0; /* done: the longest length already made a part */
  for (;;) {
    int len = 0, count = 0; /* the longest length not yet a part, and its count */
    for (int b = 0; b < c->batch; b++) {
      const int l = c->cu[b + 1] - c->cu[b];
      if (done && l >= done) continue;
      if (l > len) len = l, count = 0;
      if (l == len) count++;
    }
    if (len == 0) return 0;
    if (*n == FG_CASE_MAX_PARTS) {
      for (int k = 0; k < *n; k++) fg_case_free(&parts[k]);
      *n = 0;
      snprintf(err, errsize, "more than %d sequence lengths", FG_CASE_MAX_PARTS);
      return -1;
    }
    fg_case *p = &parts[*n];
    if (fg_case_init(p, c->mode, c->deterministic, c->dtype, count, len, c->heads, c->head_dim,
                     c->causal, &none, err, errsize) != 0) {
      for (int k = 0; k <= *n; k++) fg_case_free(&parts[k]);
      *n = 0;
      return -1;
    }
    p->row0 = c->row0 + row0;
    row0 += p->rows;
    (*n)++;
    done = len;
  }
}

/* ---- device state --------------------------------------------------------- */

static size_t fg_case_elems(const fg_case *c) {
  return (size_t)c->rows * c->heads * c->head_dim;
}

/* Runs the forward of input set `set` into o[set] and lse[set] (selected
 * variant) and waits for it. */
static int fg_case_forward(fagen_ctx *ctx, const fg_case *c, int set, char *err, size_t errsize) {
  fagen_attention_args a;
  fg_case_fwd_args(c, set, NULL, &a);
  if (fagen_attention_forward(ctx, &a, NULL) != FAGEN_OK) {
    snprintf(err, errsize, "forward: %s", fagen_errmsg(ctx));
    return -1;
  }
  FG_CU(cudaDeviceSynchronize());
  return 0;
}

int fg_case_alloc(fagen_ctx *ctx, fg_case *c, const fg_inputs *in, char *err, size_t errsize) {
  const size_t n = fg_case_elems(c), first = (size_t)c->row0 * c->heads * c->head_dim;
  if (in->n < first + n || in->dtype != c->dtype) {
    snprintf(err, errsize, "the inputs hold %zu elements, the case needs %zu", in->n, first + n);
    return -1;
  }
  c->in = in;
  if (fg_upload((void **)&c->d_cu, c->cu, sizeof(int32_t) * ((size_t)c->batch + 1), err,
                errsize) != 0 ||
      fg_upload((void **)&c->d_used, c->used, sizeof(int32_t) * (size_t)c->batch, err,
                errsize) != 0 ||
      fg_upload((void **)&c->d_slopes, c->slopes, sizeof(float) * (size_t)c->heads, err,
                errsize) != 0)
    return -1;
  FG_CU(cudaMalloc(&c->o[0], n * 2));
  c->o[1] = c->o[0];
  if (c->mode == FG_MODE_FWD) return 0;
  FG_CU(cudaMalloc(&c->o[1], n * 2)); /* the backward of set s reads set s's O */
  const size_t lse_n = (size_t)c->batch * c->heads * c->seqlen;
  for (int s = 0; s < 2; s++) FG_CU(cudaMalloc((void **)&c->lse[s], lse_n * 4));
  for (int g = 0; g < 3; g++) FG_CU(cudaMalloc(&c->grad[g], n * 2));
  fagen_attention_bwd_args b;
  fg_case_bwd_args(c, 0, NULL, &b);
  if (fagen_attention_backward_workspace(ctx, &b, &c->ws_bytes) != FAGEN_OK) {
    snprintf(err, errsize, "workspace: %s", fagen_errmsg(ctx));
    return -1;
  }
  FG_CU(cudaMalloc(&c->ws, c->ws_bytes));
  if (c->mode == FG_MODE_BWD)
    for (int s = 0; s < 2; s++)
      if (fg_case_forward(ctx, c, s, err, errsize) != 0) return -1;
  return 0;
}

void fg_case_free(fg_case *c) {
  cudaFree(c->d_cu);
  cudaFree(c->d_used);
  cudaFree(c->d_slopes);
  if (c->o[1] != c->o[0]) cudaFree(c->o[1]);
  cudaFree(c->o[0]);
  for (int s = 0; s < 2; s++) cudaFree(c->lse[s]);
  for (int g = 0; g < 3; g++) cudaFree(c->grad[g]);
  cudaFree(c->ws);
  free(c->cu);
  free(c->used);
  free(c->slopes);
  memset(c, 0, sizeof *c);
}

/* ---- arguments ------------------------------------------------------------ */

static void fg_case_feat(const fg_case *c, fagen_attention_features *f) {
  if (c->cu) {
    f->cu_seqlens_q = f->cu_seqlens_k = c->d_cu;
    f->total_q = f->total_k = c->rows;
  }
  if (c->used) f->seqused_q = f->seqused_k = c->d_used;
  if (c->fo.window) {
    f->window = 1;
    f->window_left = c->fo.window_left;
    f->window_right = c->fo.window_right;
  }
  f->softcap = c->fo.softcap;
  f->alibi_slopes = c->d_slopes; /* one slope per head for every sequence */
  f->dropout_p = c->fo.dropout;
  f->dropout_seed = FG_BENCH_DROPOUT_SEED;
}

/* Input tensor t (q, k, v, dout) of set `set` from the case's first row;
 * NULL before fg_case_alloc. */
static void *fg_case_input(const fg_case *c, int set, int t) {
  if (!c->in) return NULL;
  return (char *)c->in->dev[set][t] + (size_t)c->row0 * c->heads * c->head_dim * 2;
}

void fg_case_fwd_args(const fg_case *c, int set, const fagen_variant *variant,
                      fagen_attention_args *a) {
  fagen_attention_args_init(a);
  a->dtype = c->dtype;
  a->batch = c->batch;
  a->seqlen_q = a->seqlen_k = c->seqlen;
  a->heads_q = a->heads_kv = c->heads;
  a->head_dim = c->head_dim;
  a->causal = c->causal;
  a->q = fg_case_input(c, set, 0);
  a->k = fg_case_input(c, set, 1);
  a->v = fg_case_input(c, set, 2);
  a->o = c->o[set];
  a->lse = c->lse[set]; /* NULL in --mode fwd: an inference forward */
  fg_case_feat(c, &a->feat);
  a->variant = variant;
}

void fg_case_bwd_args(const fg_case *c, int set, const fagen_variant *variant,
                      fagen_attention_bwd_args *b) {
  fagen_attention_bwd_args_init(b);
  b->dtype = c->dtype;
  b->batch = c->batch;
  b->seqlen_q = b->seqlen_k = c->seqlen;
  b->heads_q = b->heads_kv = c->heads;
  b->head_dim = c->head_dim;
  b->causal = c->causal;
  b->q = fg_case_input(c, set, 0);
  b->k = fg_case_input(c, set, 1);
  b->v = fg_case_input(c, set, 2);
  b->dout = fg_case_input(c, set, 3);
  b->o = c->o[set];
  b->lse = c->lse[set];
  b->dq = c->grad[0];
  b->dk = c->grad[1];
  b->dv = c->grad[2];
  fg_case_feat(c, &b->feat);
  b->deterministic = c->deterministic;
  b->workspace = c->ws;
  b->workspace_bytes = c->ws_bytes;
  b->variant = variant;
}

int fg_case_takes_op(const fg_case *c, fagen_op op) {
  if (c->mode == FG_MODE_FWD) return op == FAGEN_OP_FWD || op == FAGEN_OP_FWD_WGMMA;
  if (c->deterministic) return op == FAGEN_OP_BWD_DET;
  return op == FAGEN_OP_BWD || op == FAGEN_OP_BWD_WGMMA;
}

int fg_case_fits_variant(const fg_case *c, const fagen_variant *v, const fagen_variant *sel) {
  const int head_dim_ok =
      c->mode == FG_MODE_FWD ? v->head_dim >= c->head_dim : v->head_dim == sel->head_dim;
  return fg_case_takes_op(c, v->op) && head_dim_ok && v->dtype == c->dtype &&
         v->causal == c->causal && v->features == sel->features &&
         v->target.arch == sel->target.arch;
}

int fg_case_candidate_ops(const fg_case *c, const fagen_variant *sel, fagen_op ops[2]) {
  int n = 0;
  ops[n++] = sel->op;
  /* The backward's families on sm_90a: bwdwg where the call has no feature,
     and bwd always, whichever of them was selected. */
  const int hopper = sel->target.arch == 90 && sel->target.arch_specific;
  if (c->mode != FG_MODE_FWD && !c->deterministic && hopper) {
    if (sel->op == FAGEN_OP_BWD_WGMMA) ops[n++] = FAGEN_OP_BWD;
    else if (sel->op == FAGEN_OP_BWD && sel->features == 0) ops[n++] = FAGEN_OP_BWD_WGMMA;
  }
  return n;
}

fagen_status fg_case_select(fagen_ctx *ctx, const fg_case *c, const fagen_device_class *device,
                            fagen_variant *out, fagen_select_info *info) {
  if (c->mode == FG_MODE_FWD) {
    fagen_attention_args a;
    fg_case_fwd_args(c, 0, NULL, &a);
    return fagen_attention_select(ctx, &a, device, out, info);
  }
  fagen_attention_bwd_args b;
  fg_case_bwd_args(c, 0, NULL, &b);
  return fagen_attention_backward_select(ctx, &b, device, out, info);
}

double fg_case_flops(const fg_case *c) {
  const double per_pair = 4.0 * c->heads * c->head_dim;
  double f = per_pair * c->batch * (double)c->seqlen * c->seqlen * (c->causal ? 0.5 : 1.0);
  if (c->cu || c->used || c->fo.window) f = per_pair * c->pairs;
  return c->mode == FG_MODE_FWD ? f : c->mode == FG_MODE_BWD ? 2.5 * f : 3.5 * f;
}

void fg_case_describe(const fg_case *c, char *buf, size_t size) {
  size_t n = 0;
  buf[0] = '\0';
#define FG_PUT(...) \
  n += (size_t)snprintf(buf + n, n < size ? size - n : 0, __VA_ARGS__), n = n < size ? n : size
  if (c->fo.varlen != FG_VARLEN_NONE)
    FG_PUT("varlen-%s(%d seqs) ",
           c->fo.varlen == FG_VARLEN_MIXED     ? "mixed"
           : c->fo.varlen == FG_VARLEN_CLASSES ? "classes"
                                               : "equal",
           c->batch);
  if (c->used) FG_PUT("seqused ");
  if (c->fo.window) FG_PUT("window(%d,%d) ", c->fo.window_left, c->fo.window_right);
  if (c->fo.softcap > 0) FG_PUT("softcap(%g) ", c->fo.softcap);
  if (c->fo.alibi) FG_PUT("alibi ");
  if (c->fo.dropout > 0) FG_PUT("dropout(%g) ", c->fo.dropout);
#undef FG_PUT
  if (n == 0) snprintf(buf, size, "-");
  else if (n < size) buf[n - 1] = '\0'; /* the trailing blank */
}

/* ---- the timed work and its timing --------------------------------------- */

/* One call of the timed work on input set `set`: the forward, the backward,
 * or the forward then the backward (the forward's selected variant). */
static fagen_status fg_case_launch(fagen_ctx *ctx, const fg_case *c, int set,
                                   const fagen_variant *variant) {
  if (c->mode != FG_MODE_BWD) {
    fagen_attention_args a;
    fg_case_fwd_args(c, set, c->mode == FG_MODE_FWD ? variant : NULL, &a);
    fagen_status st = fagen_attention_forward(ctx, &a, NULL);
    if (st != FAGEN_OK) return st;
  }
  if (c->mode == FG_MODE_FWD) return FAGEN_OK;
  fagen_attention_bwd_args b;
  fg_case_bwd_args(c, set, variant, &b);
  return fagen_attention_backward(ctx, &b, NULL);
}

typedef struct fg_case_batch {
  fagen_ctx *ctx;
  const fg_case *const *cases;
  const fagen_variant *const *variants;
  const int *counts; /* pairs per item, NULL: one */
} fg_case_batch;

static int fg_case_launch_one(void *user, int k, int set, char *err, size_t errsize) {
  const fg_case_batch *l = user;
  int first = k, count = 1;
  if (l->counts) {
    first = 0;
    for (int i = 0; i < k; i++) first += l->counts[i];
    count = l->counts[k];
  }
  for (int p = first; p < first + count; p++)
    if (fg_case_launch(l->ctx, l->cases[p], set, l->variants[p]) != FAGEN_OK) {
      snprintf(err, errsize, "%s", fagen_errmsg(l->ctx));
      return -1;
    }
  return 0;
}

int fg_case_time_groups(fagen_ctx *ctx, const fg_case *const *cases,
                        const fagen_variant *const *variants, const int *counts, int n,
                        int warmup, int reps, double *ms, char *err, size_t errsize) {
  for (int k = 0; counts && k < n; k++)
    if (counts[k] < 1) {
      snprintf(err, errsize, "item %d has %d calls", k, counts[k]);
      return -1;
    }
  fg_case_batch l = {ctx, cases, variants, counts};
  return fg_time_many(n, warmup, reps, fg_case_launch_one, &l, ms, err, errsize);
}

int fg_case_time_many(fagen_ctx *ctx, const fg_case *const *cases,
                      const fagen_variant *const *variants, int n, int warmup, int reps,
                      double *ms, char *err, size_t errsize) {
  return fg_case_time_groups(ctx, cases, variants, NULL, n, warmup, reps, ms, err, errsize);
}

/* ---- checks --------------------------------------------------------------- */

/* Element offset of row i (within sequence b), head h in q, o, dq, dk, ... */
static size_t fg_case_at(const fg_case *c, int b, int i, int h) {
  const size_t row = c->cu ? (size_t)c->cu[b] + i : (size_t)b * c->seqlen + i;
  return (row * c->heads + h) * c->head_dim;
}

/* The reference's view of c over the host copies of its set 0. */
static void fg_case_ref(const fg_case *c, fg_ref_features *f, fg_ref_args *r) {
  memset(f, 0, sizeof *f);
  f->cu_seqlens_q = f->cu_seqlens_k = c->cu;
  f->seqused_q = f->seqused_k = c->used;
  f->window = c->fo.window;
  f->window_left = c->fo.window_left;
  f->window_right = c->fo.window_right;
  f->softcap = c->fo.softcap;
  f->alibi_slopes = c->slopes;
  f->dropout_p = c->fo.dropout;
  f->dropout_seed = FG_BENCH_DROPOUT_SEED;
  const int64_t hd = (int64_t)c->heads * c->head_dim;
  fagen_strides st = {c->cu ? 0 : c->seqlen * hd, hd, c->head_dim}; /* packed: no batch stride */
  const size_t first = (size_t)c->row0 * hd;
  *r = (fg_ref_args){.dtype = c->dtype,
                     .batch = c->batch,
                     .seqlen_q = c->seqlen,
                     .seqlen_k = c->seqlen,
                     .heads_q = c->heads,
                     .heads_kv = c->heads,
                     .head_dim = c->head_dim,
                     .causal = c->causal,
                     .scale = 1.0 / sqrt((double)c->head_dim),
                     .q = c->in->host[0] + first,
                     .k = c->in->host[1] + first,
                     .v = c->in->host[2] + first,
                     .qs = st,
                     .ks = st,
                     .vs = st,
                     .feat = f};
}

static int fg_rand_below(uint64_t *rng, int n) {
  int x = (int)(0.5 * ((double)fg_rand_uniform(rng) + 1.0) * n);
  return x < n ? x : n - 1;
}

/* Accumulates |got - ref|^2 and |ref|^2 over n values; a NaN (unwritten)
 * element makes num infinite. */
static void fg_accumulate(fagen_dtype dt, const uint16_t *got, const double *ref, int n,
                          double *num, double *den) {
  for (int e = 0; e < n; e++) {
    double g = fg_elem_to_float(dt, got[e]);
    *num += isnan(g) ? INFINITY : (g - ref[e]) * (g - ref[e]);
    *den += ref[e] * ref[e];
  }
}

static double fg_rel(double num, double den) { return den > 0 ? sqrt(num / den) : sqrt(num); }

/* Copies n 16-bit elements of dev to a new host buffer (NULL on failure). */
static uint16_t *fg_download(const void *dev, size_t n) {
  uint16_t *h = malloc(n * 2 + 2);
  if (h && cudaMemcpy(h, dev, n * 2, cudaMemcpyDeviceToHost) != cudaSuccess) {
    free(h);
    return NULL;
  }
  return h;
}

/* The forward on input set 0 with O poisoned, against sampled reference
 * rows: the first and last row of a sequence and random ones (padded
 * layouts: padding rows too, which must be 0). */
static double fg_check_forward(fagen_ctx *ctx, const fg_case *c, const fagen_variant *variant,
                               uint64_t *rng, char *err, size_t errsize) {
  const size_t n = fg_case_elems(c);
  FG_CU(cudaMemset(c->o[0], 0xff, n * 2)); /* NaN in fp16 and bf16 */
  fagen_attention_args a;
  fg_case_fwd_args(c, 0, c->mode == FG_MODE_FWD ? variant : NULL, &a);
  if (fagen_attention_forward(ctx, &a, NULL) != FAGEN_OK) {
    snprintf(err, errsize, "forward: %s", fagen_errmsg(ctx));
    return -1;
  }
  FG_CU(cudaDeviceSynchronize());
  uint16_t *o = fg_download(c->o[0], n);
  double *ref = malloc(sizeof(double) * (size_t)c->head_dim);
  if (!o || !ref) {
    free(o), free(ref);
    snprintf(err, errsize, "reading O back failed");
    return -1;
  }
  fg_ref_features f;
  fg_ref_args r;
  fg_case_ref(c, &f, &r);
  double num = 0, den = 0, lse;
  for (int k = 0; k < FG_CHECK_ROWS; k++) {
    const int b = fg_rand_below(rng, c->batch), h = fg_rand_below(rng, c->heads);
    int lq, lk;
    fg_ref_lengths(&r, b, &lq, &lk);
    const int i = k == 0 ? 0 : k == 1 ? lq - 1 : fg_rand_below(rng, c->cu ? lq : c->seqlen);
    fg_ref_row(&r, b, h, i, ref, &lse);
    fg_accumulate(c->dtype, o + fg_case_at(c, b, i, h), ref, c->head_dim, &num, &den);
  }
  free(ref);
  free(o);
  return fg_rel(num, den);
}

/* The full-size timed work once on input set 0 with dq, dk, dv poisoned:
 * INFINITY if an element is left unwritten (or NaN), else 0. */
static double fg_check_unwritten(fagen_ctx *ctx, const fg_case *c, const fagen_variant *variant,
                                 char *err, size_t errsize) {
  const size_t n = fg_case_elems(c);
  for (int g = 0; g < 3; g++) FG_CU(cudaMemset(c->grad[g], 0xff, n * 2));
  if (fg_case_launch(ctx, c, 0, variant) != FAGEN_OK) {
    snprintf(err, errsize, "%s", fagen_errmsg(ctx));
    return -1;
  }
  FG_CU(cudaDeviceSynchronize());
  double result = 0;
  for (int g = 0; g < 3 && result == 0; g++) {
    uint16_t *x = fg_download(c->grad[g], n);
    if (!x) {
      snprintf(err, errsize, "reading gradients back failed");
      return -1;
    }
    for (size_t e = 0; e < n; e++)
      if (isnan(fg_elem_to_float(c->dtype, x[e]))) {
        result = INFINITY;
        break;
      }
    free(x);
  }
  return result;
}

/* c's features for the reduced copy of S' = seqlen: window extents scaled
 * by S' / S (a bounded extent stays bounded and non-zero ones stay >= 1). */
static fg_feature_opts fg_scaled_features(const fg_case *c, int seqlen) {
  fg_feature_opts fo = c->fo;
  int *ext[2] = {&fo.window_left, &fo.window_right};
  for (int e = 0; e < 2; e++)
    if (*ext[e] > 0) {
      long x = lround((double)*ext[e] * seqlen / c->seqlen);
      *ext[e] = x > 0 ? (int)x : 1;
    }
  return fo;
}

/* Relative errors of the reduced copy r's dq, dk, dv (read back) against
 * the reference; rows a packed layout does not hold are skipped. */
static double fg_grad_errors(const fg_case *r, uint16_t *const got[3], double *const ref[3]) {
  double worst = 0;
  for (int g = 0; g < 3; g++) {
    double num = 0, den = 0;
    for (int b = 0; b < r->batch; b++) {
      int lq, lk;
      fg_case_lengths(r, b, &lq, &lk);
      for (int i = 0; i < (r->cu ? lq : r->seqlen); i++)
        for (int h = 0; h < r->heads; h++)
          fg_accumulate(r->dtype, got[g] + fg_case_at(r, b, i, h),
                        ref[g] + (((size_t)b * r->seqlen + i) * r->heads + h) * r->head_dim,
                        r->head_dim, &num, &den);
    }
    double e = fg_rel(num, den);
    if (!(e <= worst)) worst = e; /* NaN propagates */
  }
  return worst;
}

/* Visible pairs of r by the reference's own mask, pair by pair. */
static double fg_ref_pairs(const fg_case *r, const fg_ref_args *ra) {
  double pairs = 0;
  for (int b = 0; b < r->batch; b++)
    for (int i = 0; i < r->seqlen; i++)
      for (int j = 0; j < r->seqlen; j++) pairs += fg_ref_visible(ra, b, i, j);
  return pairs;
}

int fg_case_backward_grads(fagen_ctx *ctx, const fg_case *c, const fagen_variant *variant,
                           uint16_t *got[3], char *err, size_t errsize) {
  const size_t n = fg_case_elems(c);
  for (int g = 0; g < 3; g++) got[g] = NULL;
  for (int g = 0; g < 3; g++) FG_CU(cudaMemset(c->grad[g], 0xff, n * 2));
  fagen_attention_bwd_args b;
  fg_case_bwd_args(c, 0, variant, &b);
  if (fagen_attention_backward(ctx, &b, NULL) != FAGEN_OK) {
    snprintf(err, errsize, "backward: %s", fagen_errmsg(ctx));
    return -1;
  }
  FG_CU(cudaDeviceSynchronize());
  for (int g = 0; g < 3; g++)
    if (!(got[g] = fg_download(c->grad[g], n))) {
      for (int k = 0; k < 3; k++) free(got[k]), got[k] = NULL;
      snprintf(err, errsize, "reading gradients back failed");
      return -1;
    }
  return 0;
}

/* Runs the reduced copy's backward with `variant` and compares with the
 * reference.  r is allocated over its own inputs. */
static double fg_check_reduced(fagen_ctx *ctx, fg_case *r, const fagen_variant *variant,
                               char *err, size_t errsize) {
  uint16_t *got[3];
  if (fg_case_backward_grads(ctx, r, variant, got, err, errsize) != 0) {
    char why[768];
    snprintf(why, sizeof why, "%s", err);
    snprintf(err, errsize, "check shape: %s", why); /* say which call failed, as before */
    return -1;
  }
  fg_ref_features f;
  fg_ref_args ra;
  fg_case_ref(r, &f, &ra);
  double e = -1;
  const size_t padded = (size_t)r->batch * r->seqlen * r->heads * r->head_dim;
  double *ref[3] = {NULL, NULL, NULL};
  if (fg_ref_pairs(r, &ra) != r->pairs) {
    snprintf(err, errsize, "the FLOP count's visible pairs (%.0f) disagree with the reference's",
             r->pairs);
  } else if (!(ref[0] = malloc(sizeof(double) * padded)) ||
             !(ref[1] = malloc(sizeof(double) * padded)) ||
             !(ref[2] = malloc(sizeof(double) * padded))) {
    snprintf(err, errsize, "out of host memory");
  } else {
    const int64_t hd = (int64_t)r->heads * r->head_dim;
    fagen_strides dos = {r->cu ? 0 : r->seqlen * hd, hd, r->head_dim};
    fg_ref_attention_bwd(&ra, r->in->host[3], dos, ref[0], ref[1], ref[2]);
    e = fg_grad_errors(r, got, ref);
  }
  for (int g = 0; g < 3; g++) free(ref[g]), free(got[g]);
  return e;
}

/* The backward's check: the full-size work writes every gradient, and a
 * reduced copy of the case with the same variant matches the reference. */
static double fg_check_backward(fagen_ctx *ctx, const fg_case *c, const fagen_variant *variant,
                                uint64_t *rng, char *err, size_t errsize) {
  double full = fg_check_unwritten(ctx, c, variant, err, errsize);
  if (full != 0) return full;
  const int s = c->seqlen < FG_CHECK_SEQLEN ? c->seqlen : FG_CHECK_SEQLEN;
  const fg_feature_opts fo = fg_scaled_features(c, s);
  fg_case r;
  fg_inputs in;
  memset(&in, 0, sizeof in);
  double e = -1;
  if (fg_case_init(&r, FG_MODE_BWD, c->deterministic, c->dtype, FG_CHECK_BATCH, s,
                   FG_CHECK_HEADS, c->head_dim, c->causal, &fo, err, errsize) == 0 &&
      fg_inputs_alloc(&in, c->dtype, fg_case_elems(&r), rng, err, errsize) == 0 &&
      fg_case_alloc(ctx, &r, &in, err, errsize) == 0)
    e = fg_check_reduced(ctx, &r, variant, err, errsize);
  fg_case_free(&r);
  fg_inputs_free(&in);
  return e;
}

double fg_case_check(fagen_ctx *ctx, const fg_case *c, const fagen_variant *variant,
                     uint64_t *rng, char *err, size_t errsize) {
  double fwd = 0, bwd = 0;
  if (c->mode != FG_MODE_BWD && (fwd = fg_check_forward(ctx, c, variant, rng, err, errsize)) < 0)
    return -1;
  if (c->mode != FG_MODE_FWD && (bwd = fg_check_backward(ctx, c, variant, rng, err, errsize)) < 0)
    return -1;
  return fwd > bwd || isnan(fwd) ? fwd : bwd;
}
