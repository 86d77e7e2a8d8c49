/* Masks and score features on a GPU against the float64 reference: padded
 * and packed lengths, sliding windows, softcap, ALiBi, dropout, alone and
 * combined with each other, GQA and causal; forward (O, LSE) and backward
 * (dQ, dK, dV, atomic and deterministic).  Dropout's mask is also read back
 * exactly (q = 0, v a pattern of unit vectors) and compared with the
 * reference's, element by element, with its kept fraction.  Outputs are
 * poisoned first: padded rows must come back exactly 0 (LSE -inf), rows
 * outside every packed sequence must keep their poison, rows that see no key
 * give O = 0, LSE = -inf and zero gradients, never NaN.  Packed calls must
 * equal each sequence run on its own.  Skipped, visibly, where no GPU is
 * present.  Fresh inputs every run (the seed is printed; FAGEN_TEST_SEED
 * replays one). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_cuda.h"
#include "fg_test.h"

static const fg_cuda_api *cu;
static char *cache_dir;

static void gpu_setup(void) { cu = fg_test_gpu_begin(&cache_dir); }
static void gpu_teardown(void) { fg_test_gpu_end(cache_dir); }

#define CU_OK(call) cr_assert_eq((call), CUDA_SUCCESS, "%s", #call)

enum { DENSE, PADDED, PADDED_K, PACKED }; /* how sequence lengths are given */
enum { MAXB = 8 };

typedef struct fcase {
  fagen_dtype dtype;
  int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, causal;
  int mode;
  int window, left, right;
  float softcap;
  int alibi; /* 0 none; 1 one slope per head (stride 0); 2 per batch (stride heads_q) */
  float dropout; /* dropout_p; seed and offset drawn from the test's seed */
} fcase;

/* Lengths of sequence b: full, empty, 1, and others in between. */
static int len_of(int b, int S, int kv) {
  const int q[] = {S, 0, 1, S * 2 / 3 + 1, 7, S - 1, S / 2, 3};
  const int k[] = {S, S / 2 + 1, 0, 1, S, S / 3, 7, S - 1};
  int n = kv ? k[b % 8] : q[b % 8];
  return n < 0 ? 0 : n > S ? S : n;
}

/* Tensors: 0 q, 1 k, 2 v, 3 o, 4 dout, 5 dq, 6 dk, 7 dv. */
enum { NT = 8 };
static int is_kv(int t) { return t == 1 || t == 2 || t == 6 || t == 7; }

typedef struct bufs {
  int32_t len_q[MAXB], len_k[MAXB], cu_q[MAXB + 1], cu_k[MAXB + 1];
  int rows_q, rows_k; /* rows of the q- and k-side buffers (all batch entries) */
  float slopes[MAXB * 16];
  int64_t slope_stride;
  size_t n[NT];
  uint16_t *host[NT];
  CUdeviceptr dev[NT], lse, arr[5]; /* arr: cu_q, cu_k, used_q, used_k, slopes */
  fagen_attention_features feat;
  fg_ref_features rf;
  fg_ref_args ra;
  fagen_strides dos;
} bufs;

static CUdeviceptr upload(const void *p, size_t bytes) {
  CUdeviceptr d;
  CU_OK(cu->mem_alloc(&d, bytes));
  CU_OK(cu->memcpy_htod(d, p, bytes));
  return d;
}

/* NaN in the rows of input t (q, k or v) that no sequence owns: padding
 * (rows at and past a padded sequence's length) and the rows before and
 * after every packed sequence.  A kernel must not let them reach a result:
 * the Hopper forward loads whole tiles with TMA, and a masked score gives
 * P = 0, but 0 * NaN in P V is NaN (it zeroes those V rows first). */
static void poison_unused_rows(const fcase *s, bufs *bf, int t, size_t row_elems) {
  const int kv = is_kv(t), S = kv ? s->seqlen_k : s->seqlen_q;
  const int *len = kv ? bf->len_k : bf->len_q, *cu = kv ? bf->cu_k : bf->cu_q;
  const int rows = kv ? bf->rows_k : bf->rows_q;
  for (int row = 0; row < rows; row++) {
    int unused;
    if (s->mode == PACKED)
      unused = row < cu[0] || row >= cu[s->batch];
    else
      unused = row % S >= len[row / S]; /* DENSE: len = S, nothing unused */
    if (unused)
      for (size_t e = 0; e < row_elems; e++) bf->host[t][(size_t)row * row_elems + e] = 0x7fff;
  }
}

static void setup(const fcase *s, bufs *bf, uint64_t *rng) {
  memset(bf, 0, sizeof *bf);
  cr_assert(s->batch <= MAXB && s->heads_q <= 16);
  const int packed = s->mode == PACKED, H[2] = {s->heads_q, s->heads_kv}, D = s->head_dim;
  bf->cu_q[0] = packed ? 2 : 0; /* packed: 2 rows before the first sequence, 3 after the last */
  bf->cu_k[0] = packed ? 2 : 0;
  for (int b = 0; b < s->batch; b++) {
    const int all_q = s->mode == DENSE || s->mode == PADDED_K;
    bf->len_q[b] = all_q ? s->seqlen_q : len_of(b, s->seqlen_q, 0);
    bf->len_k[b] = s->mode == DENSE ? s->seqlen_k : len_of(b, s->seqlen_k, 1);
    bf->cu_q[b + 1] = bf->cu_q[b] + bf->len_q[b];
    bf->cu_k[b + 1] = bf->cu_k[b] + bf->len_k[b];
  }
  bf->rows_q = packed ? bf->cu_q[s->batch] + 3 : s->batch * s->seqlen_q;
  bf->rows_k = packed ? bf->cu_k[s->batch] + 3 : s->batch * s->seqlen_k;
  for (int t = 0; t < NT; t++) {
    bf->n[t] = (size_t)(is_kv(t) ? bf->rows_k : bf->rows_q) * H[is_kv(t)] * D;
    CU_OK(cu->mem_alloc(&bf->dev[t], bf->n[t] * 2));
    if (t == 3 || t >= 5) continue;
    bf->host[t] = malloc(bf->n[t] * 2);
    const float amp = t == 0 ? 2.0f : 1.0f; /* peaked softmax rows */
    for (size_t e = 0; e < bf->n[t]; e++)
      bf->host[t][e] = fg_test_from_float(s->dtype, amp * fg_test_uniform(rng));
    if (t < 3) poison_unused_rows(s, bf, t, H[is_kv(t)] * D);
    CU_OK(cu->memcpy_htod(bf->dev[t], bf->host[t], bf->n[t] * 2));
  }
  CU_OK(cu->mem_alloc(&bf->lse, (size_t)s->batch * s->heads_q * s->seqlen_q * 4));
  for (int b = 0; b < s->batch; b++)
    for (int h = 0; h < s->heads_q; h++) /* 2^(-8 (h + 1) / H), halved for odd b */
      bf->slopes[b * s->heads_q + h] =
          (float)(exp2(-8.0 * (h + 1) / s->heads_q) * (s->alibi == 2 && b % 2 ? 0.5 : 1.0));
  bf->slope_stride = s->alibi == 2 ? s->heads_q : 0;

  fagen_attention_features *f = &bf->feat;
  fg_ref_features *rf = &bf->rf;
  const size_t nb = (size_t)s->batch * 4;
  if (packed) {
    f->cu_seqlens_q = (const int32_t *)(bf->arr[0] = upload(bf->cu_q, nb + 4));
    f->cu_seqlens_k = (const int32_t *)(bf->arr[1] = upload(bf->cu_k, nb + 4));
    f->total_q = bf->rows_q, f->total_k = bf->rows_k;
    rf->cu_seqlens_q = bf->cu_q, rf->cu_seqlens_k = bf->cu_k;
  }
  if (s->mode == PADDED) {
    f->seqused_q = (const int32_t *)(bf->arr[2] = upload(bf->len_q, nb));
    rf->seqused_q = bf->len_q;
  }
  if (s->mode == PADDED || s->mode == PADDED_K) {
    f->seqused_k = (const int32_t *)(bf->arr[3] = upload(bf->len_k, nb));
    rf->seqused_k = bf->len_k;
  }
  f->window = rf->window = s->window;
  f->window_left = rf->window_left = s->left;
  f->window_right = rf->window_right = s->right;
  f->softcap = s->softcap;
  rf->softcap = s->softcap;
  if (s->dropout > 0) {
    fg_test_uniform(rng);
    f->dropout_seed = rf->dropout_seed = *rng;
    fg_test_uniform(rng);
    f->dropout_offset = rf->dropout_offset = *rng >> (*rng & 1 ? 0 : 32); /* offset_hi 0 or not */
    f->dropout_p = s->dropout;
    rf->dropout_p = s->dropout;
  }
  if (s->alibi) {
    f->alibi_slopes = (const float *)(bf->arr[4] = upload(bf->slopes, nb * s->heads_q));
    rf->alibi_slopes = bf->slopes;
    f->alibi_batch_stride = rf->alibi_batch_stride = bf->slope_stride;
  }
  fagen_strides st[2];
  for (int kv = 0; kv < 2; kv++) {
    const int S = kv ? s->seqlen_k : s->seqlen_q;
    st[kv] = (fagen_strides){packed ? 0 : (int64_t)S * H[kv] * D, (int64_t)H[kv] * D, D};
  }
  bf->ra = (fg_ref_args){s->dtype,  s->batch,    s->seqlen_q, s->seqlen_k,
                         s->heads_q, s->heads_kv, s->head_dim, s->causal,
                         1.0 / sqrt((double)D), bf->host[0], bf->host[1], bf->host[2],
                         st[0],    st[1],       st[1],       rf};
  bf->dos = st[0];
}

static void free_bufs(bufs *bf) {
  for (int t = 0; t < NT; t++) {
    cu->mem_free(bf->dev[t]);
    free(bf->host[t]);
  }
  cu->mem_free(bf->lse);
  for (int i = 0; i < 5; i++)
    if (bf->arr[i]) cu->mem_free(bf->arr[i]);
}

#define SIZES(x, s)                                                                        \
  ((x).dtype = (s)->dtype, (x).batch = (s)->batch, (x).seqlen_q = (s)->seqlen_q,           \
   (x).seqlen_k = (s)->seqlen_k, (x).heads_q = (s)->heads_q, (x).heads_kv = (s)->heads_kv, \
   (x).head_dim = (s)->head_dim, (x).causal = (s)->causal)

static fagen_attention_args fwd_args(const fcase *s, const bufs *bf) {
  fagen_attention_args a;
  fagen_attention_args_init(&a);
  SIZES(a, s);
  a.q = (void *)bf->dev[0], a.k = (void *)bf->dev[1], a.v = (void *)bf->dev[2];
  a.o = (void *)bf->dev[3];
  a.lse = (float *)bf->lse;
  a.feat = bf->feat;
  return a;
}

static fagen_attention_bwd_args bwd_args(const fcase *s, const bufs *bf, int det) {
  fagen_attention_bwd_args b;
  fagen_attention_bwd_args_init(&b);
  SIZES(b, s);
  b.q = (void *)bf->dev[0], b.k = (void *)bf->dev[1], b.v = (void *)bf->dev[2];
  b.o = (void *)bf->dev[3], b.dout = (void *)bf->dev[4];
  b.dq = (void *)bf->dev[5], b.dk = (void *)bf->dev[6], b.dv = (void *)bf->dev[7];
  b.lse = (const float *)bf->lse;
  b.feat = bf->feat;
  b.deterministic = det;
  return b;
}

static uint16_t *download(CUdeviceptr d, size_t bytes) {
  uint16_t *h = malloc(bytes);
  CU_OK(cu->memcpy_dtoh(h, d, bytes));
  return h;
}

/* Element offset of row i (within sequence b), head h of a q-side (kv 0) or
 * k-side tensor. */
static size_t at(const fcase *s, const bufs *bf, int kv, int b, int i, int h) {
  const int H = kv ? s->heads_kv : s->heads_q, S = kv ? s->seqlen_k : s->seqlen_q;
  const int64_t row = s->mode == PACKED ? (kv ? bf->cu_k : bf->cu_q)[b] + i : (int64_t)b * S + i;
  return ((size_t)row * H + h) * s->head_dim;
}

/* Checks one written tensor against its reference (padded view): returns
 * ||got - ref|| / ||ref|| over the rows of the sequences and counts in *bad
 * the elements that break a rule (NaN; not exactly 0 where a row sees no
 * key or is padding; poison overwritten outside every packed sequence). */
static double check_tensor(const fcase *s, const bufs *bf, int t, const uint16_t *got,
                           const double *ref, const double *ref_lse, int *bad, char *where) {
  const int kv = is_kv(t), D = s->head_dim;
  const int S = kv ? s->seqlen_k : s->seqlen_q, H = kv ? s->heads_kv : s->heads_q;
  const char *names[NT] = {"q", "k", "v", "O", "dout", "dQ", "dK", "dV"};
  double num = 0, den = 0;
  for (int b = 0; b < s->batch; b++)
    for (int i = 0; i < S; i++)
      for (int h = 0; h < H; h++) {
        const int len = kv ? bf->len_k[b] : bf->len_q[b];
        if (i >= len && s->mode == PACKED) continue; /* no such row in the buffer */
        const int sees_nothing = !kv && ref_lse[((size_t)b * H + h) * S + i] == -INFINITY;
        const uint16_t *g = got + at(s, bf, kv, b, i, h);
        const double *r = ref + (((size_t)b * S + i) * H + h) * D;
        for (int e = 0; e < D; e++) {
          const float y = fg_test_to_float(s->dtype, g[e]);
          if (isnan(y) || ((i >= len || sees_nothing) && y != 0)) {
            if ((*bad)++ == 0)
              sprintf(where, "%s b%d row %d head %d: %g (ref %g, len %d)", names[t], b, i, h,
                      (double)y, r[e], len);
            continue;
          }
          num += (y - r[e]) * (y - r[e]);
          den += r[e] * r[e];
        }
      }
  if (s->mode == PACKED) { /* rows outside every sequence keep their poison */
    const int rows = kv ? bf->rows_k : bf->rows_q, *cu = kv ? bf->cu_k : bf->cu_q;
    for (int row = 0; row < rows; row++) {
      if (row >= cu[0] && row < cu[s->batch]) continue;
      for (size_t e = 0; e < (size_t)H * D; e++)
        if (got[(size_t)row * H * D + e] != 0xffff && (*bad)++ == 0)
          sprintf(where, "%s row %d outside every sequence was written", names[t], row);
    }
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The LSE: -inf exactly where the reference has -inf (rows that see no key,
 * rows past a sequence), else its relative error. */
static double check_lse(const fcase *s, const float *got, const double *ref, int *bad,
                        char *where) {
  double num = 0, den = 0;
  const size_t n = (size_t)s->batch * s->heads_q * s->seqlen_q;
  for (size_t i = 0; i < n; i++) {
    if (isnan(got[i]) || (ref[i] == -INFINITY) != (got[i] == -INFINITY) || got[i] == INFINITY) {
      if ((*bad)++ == 0)
        sprintf(where, "LSE [%zu] (b%zu h%zu i%zu): %g, ref %g", i,
                i / ((size_t)s->heads_q * s->seqlen_q), i / s->seqlen_q % s->heads_q,
                i % s->seqlen_q, (double)got[i], ref[i]);
      continue;
    }
    if (ref[i] == -INFINITY) continue;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? sqrt(num / den) : 0;
}

/* What the GPU wrote: O, LSE, and dQ, dK, dV of deterministic 0 and 1. */
typedef struct outs {
  uint16_t *o, *gd[2][3];
  float *lse;
} outs;

static void run_forward(fagen_ctx *ctx, const fcase *s, bufs *bf, outs *out) {
  const size_t nl = (size_t)s->batch * s->heads_q * s->seqlen_q;
  CU_OK(cu->memset_d8(bf->dev[3], 0xff, bf->n[3] * 2)); /* NaN in fp16, bf16 and fp32 */
  CU_OK(cu->memset_d8(bf->lse, 0xff, nl * 4));
  fagen_attention_args a = fwd_args(s, bf);
  cr_assert_eq(fagen_attention_forward(ctx, &a, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  CU_OK(cu->ctx_synchronize());
  out->o = download(bf->dev[3], bf->n[3] * 2);
  out->lse = (float *)download(bf->lse, nl * 4);
}

static void run_backward(fagen_ctx *ctx, const fcase *s, bufs *bf, int det, outs *out) {
  for (int i = 0; i < 3; i++) CU_OK(cu->memset_d8(bf->dev[5 + i], 0xff, bf->n[5 + i] * 2));
  fagen_attention_bwd_args b = bwd_args(s, bf, det);
  cr_assert_eq(fagen_attention_backward(ctx, &b, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  CU_OK(cu->ctx_synchronize());
  for (int i = 0; i < 3; i++) out->gd[det][i] = download(bf->dev[5 + i], bf->n[5 + i] * 2);
}

static const char *mode_name(int m) {
  return m == DENSE ? "dense" : m == PADDED ? "padded" : m == PADDED_K ? "padded-k" : "packed";
}

static double bwd_tol(const fcase *s) { return s->dtype == FAGEN_DTYPE_BF16 ? 1e-2 : 5e-3; }

/* Packed: each sequence run on its own (batch 1, its own offsets {0, len},
 * inputs at its rows, the same variant forced) gives the same O and LSE bits,
 * the same dK and dV bits, and dQ within tolerance (bitwise when
 * deterministic).  With dropout the mask depends on the sequence index b, so
 * sequence b runs as the last of b + 1 sequences, the first b empty
 * (offsets {0, ..., 0, len}; its slopes stay at index b). */
static void check_each_sequence_alone(fagen_ctx *ctx, const fcase *s, bufs *bf, const outs *out) {
  fagen_attention_args full = fwd_args(s, bf);
  fagen_attention_bwd_args fullb[2] = {bwd_args(s, bf, 0), bwd_args(s, bf, 1)};
  fagen_variant fv, bv[2];
  cr_assert_eq(fagen_attention_select(ctx, &full, NULL, &fv, NULL), FAGEN_OK);
  for (int det = 0; det < 2; det++)
    cr_assert_eq(fagen_attention_backward_select(ctx, &fullb[det], NULL, &bv[det], NULL),
                 FAGEN_OK);
  const int Hq = s->heads_q, Hk = s->heads_kv, D = s->head_dim;
  for (int b = 0; b < s->batch; b++) {
    const int lq = bf->len_q[b], lk = bf->len_k[b];
    if (lq == 0 || lk == 0) continue; /* nothing to run on its own */
    const int lead = s->dropout > 0 ? b : 0; /* empty sequences before it */
    int32_t cq[MAXB + 1] = {0}, ck[MAXB + 1] = {0};
    cq[lead + 1] = lq, ck[lead + 1] = lk;
    CUdeviceptr dcq = upload(cq, (size_t)(lead + 2) * 4), dck = upload(ck, (size_t)(lead + 2) * 4);
    CUdeviceptr o1, lse1, g1[3];
    const size_t qoff = at(s, bf, 0, b, 0, 0) * 2, koff = at(s, bf, 1, b, 0, 0) * 2;
    const size_t nq = (size_t)lq * Hq * D, nk = (size_t)lk * Hk * D;
    const size_t lse0 = (size_t)lead * Hq * lq; /* where sequence b's LSE starts */
    CU_OK(cu->mem_alloc(&o1, nq * 2));
    CU_OK(cu->mem_alloc(&lse1, (size_t)(lead + 1) * Hq * lq * 4));
    fcase one = *s;
    one.batch = lead + 1, one.seqlen_q = lq, one.seqlen_k = lk;
    fagen_attention_args a = full;
    SIZES(a, &one);
    a.q = (void *)(bf->dev[0] + qoff), a.k = (void *)(bf->dev[1] + koff);
    a.v = (void *)(bf->dev[2] + koff), a.o = (void *)o1, a.lse = (float *)lse1;
    a.feat.cu_seqlens_q = (const int32_t *)dcq, a.feat.cu_seqlens_k = (const int32_t *)dck;
    a.feat.total_q = lq, a.feat.total_k = lk;
    if (s->alibi) a.feat.alibi_slopes += (b - lead) * bf->slope_stride;
    a.variant = &fv;
    cr_assert_eq(fagen_attention_forward(ctx, &a, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
    CU_OK(cu->ctx_synchronize());
    uint16_t *o = download(o1, nq * 2);
    float *lse = (float *)download(lse1, (size_t)(lead + 1) * Hq * lq * 4);
    cr_assert_eq(memcmp(o, out->o + qoff / 2, nq * 2), 0, "sequence %d alone: O differs", b);
    for (int h = 0; h < Hq; h++)
      cr_assert_eq(memcmp(lse + lse0 + (size_t)h * lq,
                          out->lse + ((size_t)b * Hq + h) * s->seqlen_q,
                          (size_t)lq * 4),
                   0, "sequence %d alone: LSE of head %d differs", b, h);
    for (int i = 0; i < 3; i++) CU_OK(cu->mem_alloc(&g1[i], (i ? nk : nq) * 2));
    for (int det = 0; det < 2; det++) {
      fagen_attention_bwd_args g = fullb[det];
      SIZES(g, &one);
      g.q = a.q, g.k = a.k, g.v = a.v, g.o = (void *)(bf->dev[3] + qoff);
      g.dout = (void *)(bf->dev[4] + qoff), g.lse = (const float *)lse1;
      g.dq = (void *)g1[0], g.dk = (void *)g1[1], g.dv = (void *)g1[2];
      g.feat = a.feat;
      g.variant = &bv[det];
      cr_assert_eq(fagen_attention_backward(ctx, &g, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
      CU_OK(cu->ctx_synchronize());
      for (int i = 0; i < 3; i++) {
        const size_t n = i ? nk : nq, off = (i ? koff : qoff) / 2;
        uint16_t *x = download(g1[i], n * 2);
        const uint16_t *y = out->gd[det][i] + off;
        if (i || det) {
          cr_assert_eq(memcmp(x, y, n * 2), 0, "sequence %d alone: %s (det %d) differs", b,
                       i == 0 ? "dQ" : i == 1 ? "dK" : "dV", det);
        } else {
          double num = 0, den = 0;
          for (size_t e = 0; e < n; e++) {
            const double u = fg_test_to_float(s->dtype, x[e]), w = fg_test_to_float(s->dtype, y[e]);
            num += (u - w) * (u - w), den += w * w;
          }
          const double err = den > 0 ? sqrt(num / den) : sqrt(num);
          cr_assert_lt(err, bwd_tol(s) / 4, "sequence %d alone: dQ differs by %.2e", b, err);
        }
        free(x);
      }
    }
    for (int i = 0; i < 3; i++) cu->mem_free(g1[i]);
    cu->mem_free(dcq), cu->mem_free(dck), cu->mem_free(o1), cu->mem_free(lse1);
    free(o), free(lse);
  }
}

/* A context and the case's buffers from a fresh seed (returned). */
static uint64_t begin_case(const fcase *s, fagen_ctx **ctx, bufs *bf) {
  cr_assert_eq(fagen_ctx_create(ctx), FAGEN_OK);
  const uint64_t seed = fg_test_seed();
  uint64_t rng = seed;
  setup(s, bf, &rng);
  return seed;
}

static void check(const fcase *s) {
  fagen_ctx *ctx;
  bufs bf;
  const uint64_t seed = begin_case(s, &ctx, &bf);
  outs out;
  memset(&out, 0, sizeof out);
  run_forward(ctx, s, &bf, &out);
  run_backward(ctx, s, &bf, 0, &out);
  run_backward(ctx, s, &bf, 1, &out);

  const size_t nq = (size_t)s->batch * s->seqlen_q * s->heads_q * s->head_dim;
  const size_t nk = (size_t)s->batch * s->seqlen_k * s->heads_kv * s->head_dim;
  double *ro = malloc(nq * 8), *rl = malloc((size_t)s->batch * s->heads_q * s->seqlen_q * 8);
  double *rg[3] = {malloc(nq * 8), malloc(nk * 8), malloc(nk * 8)};
  fg_ref_attention(&bf.ra, ro, rl);
  fg_ref_attention_bwd(&bf.ra, bf.host[4], bf.dos, rg[0], rg[1], rg[2]);

  int bad = 0;
  char where[256] = "";
  const double eo = check_tensor(s, &bf, 3, out.o, ro, rl, &bad, where);
  const double el = check_lse(s, out.lse, rl, &bad, where);
  double eg[2][3];
  for (int det = 0; det < 2; det++)
    for (int i = 0; i < 3; i++)
      eg[det][i] = check_tensor(s, &bf, 5 + i, out.gd[det][i], rg[i], rl, &bad, where);
  printf("  %s B=%d Sq=%d Sk=%d Hq=%d Hkv=%d d=%d causal=%d %s window=%d(%d,%d) softcap=%g "
         "alibi=%d dropout=%g: O %.2e LSE %.2e; dQ dK dV %.2e %.2e %.2e, det %.2e %.2e %.2e "
         "(seed %llu)\n",
         s->dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", s->batch, s->seqlen_q, s->seqlen_k,
         s->heads_q, s->heads_kv, s->head_dim, s->causal, mode_name(s->mode), s->window, s->left,
         s->right, (double)s->softcap, s->alibi, (double)s->dropout, eo, el, eg[0][0], eg[0][1],
         eg[0][2], eg[1][0], eg[1][1], eg[1][2], (unsigned long long)seed);
  fflush(stdout);
  cr_assert_eq(bad, 0, "%d elements break the rules; first: %s (seed %llu)", bad, where,
               (unsigned long long)seed);
  const double tol = s->dtype == FAGEN_DTYPE_BF16 ? 1e-2 : 2e-3;
  cr_assert_lt(eo, tol, "O error %.3e over %.0e (seed %llu)", eo, tol, (unsigned long long)seed);
  cr_assert_lt(el, 1e-4, "LSE error %.3e (seed %llu)", el, (unsigned long long)seed);
  const char *what[3] = {"dQ", "dK", "dV"};
  for (int det = 0; det < 2; det++)
    for (int i = 0; i < 3; i++)
      cr_assert_lt(eg[det][i], bwd_tol(s), "%s (deterministic %d) error %.3e over %.0e (seed %llu)",
                   what[i], det, eg[det][i], bwd_tol(s), (unsigned long long)seed);
  if (s->mode == PACKED) check_each_sequence_alone(ctx, s, &bf, &out);

  free(out.o), free(out.lse);
  for (int det = 0; det < 2; det++)
    for (int i = 0; i < 3; i++) free(out.gd[det][i]);
  free(ro), free(rl), free(rg[0]), free(rg[1]), free(rg[2]);
  free_bufs(&bf);
  fagen_ctx_destroy(ctx);
}

#define BF FAGEN_DTYPE_BF16
#define FP FAGEN_DTYPE_FP16
#define GPU_TEST(name, ...)                                                              \
  Test(features_gpu, name, .init = gpu_setup, .fini = gpu_teardown, .timeout = 600) {   \
    const fcase cases[] = {__VA_ARGS__};                                                 \
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check(&cases[i]);        \
  }

/* dtype B  Sq   Sk   Hq Hkv d   causal mode      window left right softcap alibi dropout */
GPU_TEST(padded_lengths,
         {BF, 4, 77, 200, 8, 2, 64, 0, PADDED, 0, 0, 0, 0, 0, 0},
         {BF, 4, 77, 200, 8, 2, 64, 1, PADDED, 0, 0, 0, 0, 0, 0},
         {FP, 3, 257, 257, 4, 4, 128, 1, PADDED_K, 0, 0, 0, 0, 0, 0},
         {FP, 3, 7, 1, 2, 2, 128, 0, PADDED, 0, 0, 0, 0, 0, 0})
GPU_TEST(packed_sequences,
         {BF, 5, 200, 77, 8, 2, 64, 0, PACKED, 0, 0, 0, 0, 0, 0},
         {BF, 5, 200, 200, 8, 2, 64, 1, PACKED, 0, 0, 0, 0, 0, 0},
         {FP, 4, 257, 257, 2, 2, 128, 0, PACKED, 0, 0, 0, 0, 0, 0},
         {FP, 3, 7, 7, 4, 1, 128, 1, PACKED, 0, 0, 0, 0, 0, 0})
GPU_TEST(sliding_window,
         {BF, 2, 200, 257, 4, 2, 64, 0, DENSE, 1, 16, 0, 0, 0, 0},
         {BF, 2, 200, 257, 4, 2, 64, 1, DENSE, 1, 16, 0, 0, 0, 0},
         {BF, 2, 200, 77, 4, 2, 64, 0, DENSE, 1, 0, 0, 0, 0, 0}, /* rows 0..122 see no key */
         {FP, 2, 257, 200, 4, 4, 128, 1, DENSE, 1, 32, 8, 0, 0, 0},
         {FP, 2, 77, 200, 4, 4, 128, 0, DENSE, 1, -1, 5, 0, 0, 0},
         {BF, 2, 257, 77, 4, 2, 64, 1, DENSE, 1, 7, -1, 0, 0, 0},
         {BF, 2, 77, 257, 4, 2, 64, 0, DENSE, 1, 7, -1, 0, 0, 0})
GPU_TEST(softcap,
         {BF, 2, 200, 200, 4, 2, 128, 0, DENSE, 0, 0, 0, 30, 0, 0},
         {BF, 2, 200, 200, 4, 2, 128, 1, DENSE, 0, 0, 0, 5, 0, 0},
         {FP, 2, 77, 200, 4, 4, 64, 0, DENSE, 0, 0, 0, 5, 0, 0},
         {FP, 2, 257, 77, 4, 4, 64, 1, DENSE, 0, 0, 0, 30, 0, 0})
GPU_TEST(alibi,
         {BF, 2, 200, 200, 8, 2, 64, 0, DENSE, 0, 0, 0, 0, 1, 0},
         {BF, 2, 200, 257, 8, 2, 64, 1, DENSE, 0, 0, 0, 0, 2, 0},
         {FP, 3, 77, 77, 4, 4, 128, 0, DENSE, 0, 0, 0, 0, 2, 0},
         {FP, 2, 257, 200, 4, 4, 128, 1, DENSE, 0, 0, 0, 0, 1, 0})
GPU_TEST(combined,
         {BF, 6, 200, 200, 8, 2, 64, 1, PACKED, 1, 32, -1, 5, 2, 0},
         {FP, 4, 77, 200, 8, 2, 128, 0, PADDED, 1, 16, 8, 30, 1, 0},
         {BF, 2, 77, 77, 4, 2, 96, 1, DENSE, 1, 16, 0, 5, 0, 0},
         {FP, 8, 7, 7, 4, 2, 40, 0, PACKED, 0, 0, 0, 0, 1, 0},
         {BF, 2, 1, 257, 8, 2, 64, 1, DENSE, 0, 0, 0, 30, 2, 0},
         {FP, 3, 200, 77, 4, 4, 64, 0, PADDED_K, 1, 0, 3, 5, 0, 0})
/* Rows that see no key in each mode: empty key sequences with queries,
 * windows past the keys, causal with more queries than keys. */
GPU_TEST(fully_masked_rows,
         {BF, 3, 200, 77, 4, 2, 64, 1, PADDED, 1, 4, 0, 0, 0, 0},
         {FP, 4, 77, 200, 4, 4, 128, 0, PACKED, 1, 0, 0, 5, 1, 0},
         {BF, 2, 200, 7, 4, 2, 64, 0, PADDED_K, 1, 2, -1, 30, 2, 0},
         {FP, 2, 257, 1, 2, 2, 128, 1, DENSE, 1, -1, -1, 0, 1, 0})
/* Dropout against the reference, alone and with causal, GQA, windows,
 * softcap, ALiBi, padded and packed lengths (packed: each sequence alone
 * too, behind b empty sequences). */
/* dtype B  Sq   Sk   Hq Hkv d   causal mode      window left right softcap alibi dropout */
GPU_TEST(dropout,
         {BF, 2, 200, 257, 4, 2, 64, 0, DENSE, 0, 0, 0, 0, 0, 0.1f},
         {FP, 2, 257, 200, 4, 4, 128, 1, DENSE, 0, 0, 0, 0, 0, 0.5f},
         {BF, 4, 77, 200, 8, 2, 64, 1, PADDED, 1, 16, 8, 5, 1, 0.1f},
         {FP, 5, 200, 200, 8, 2, 64, 0, PACKED, 1, 32, -1, 30, 2, 0.5f},
         {BF, 3, 200, 77, 4, 1, 128, 1, PACKED, 0, 0, 0, 0, 0, 0.5f})

/* The kernel's dropout mask, read back exactly.  With q = 0 every visible
 * P of row i is 1 / n_i (n_i its visible keys), and with v_j = 2^(j / D)
 * times the unit vector e_(j % D), O_i[e] * n_i / z (z = 65536 / (65536 -
 * p16)) is the integer sum over k of 2^k kept(i, e + k D).  Every bit must be
 * the reference's (fg_ref_dropout_factor at b * heads_q + h, i, j within the
 * sequence), the kept fraction over the visible elements within 5 sigma of
 * 1 - p16 / 65536, the LSE log(n_i) (undropped); the same call gives the
 * same bits, and another seed, offset (low or high half) other ones. */
static void check_mask(const fcase *s) {
  fagen_ctx *ctx;
  bufs bf;
  const uint64_t seed = begin_case(s, &ctx, &bf);
  const int D = s->head_dim, Hq = s->heads_q, Hk = s->heads_kv;
  memset(bf.host[0], 0, bf.n[0] * 2);
  memset(bf.host[2], 0, bf.n[2] * 2);
  for (int b = 0; b < s->batch; b++)
    for (int j = 0; j < bf.len_k[b]; j++)
      for (int h = 0; h < Hk; h++)
        bf.host[2][at(s, &bf, 1, b, j, h) + j % D] =
            fg_test_from_float(s->dtype, (float)(1 << (j / D)));
  CU_OK(cu->memcpy_htod(bf.dev[0], bf.host[0], bf.n[0] * 2));
  CU_OK(cu->memcpy_htod(bf.dev[2], bf.host[2], bf.n[2] * 2));
  outs out;
  memset(&out, 0, sizeof out);
  run_forward(ctx, s, &bf, &out);
  const uint32_t p16 = fg_ref_dropout_p16(bf.rf.dropout_p);
  const double z = 65536.0 / (65536.0 - p16), q = 1 - p16 / 65536.0;
  long kept = 0, n = 0, bad = 0;
  char where[256] = "";
  for (int b = 0; b < s->batch; b++)
    for (int h = 0; h < Hq; h++)
      for (int i = 0; i < bf.len_q[b]; i++) {
        int vis = 0;
        for (int j = 0; j < bf.len_k[b]; j++) vis += fg_ref_visible(&bf.ra, b, i, j);
        const float lse = out.lse[((size_t)b * Hq + h) * s->seqlen_q + i];
        const double want_lse = vis ? log((double)vis) : -INFINITY;
        if (vis ? !(fabs(lse - want_lse) < 1e-5 * (1 + want_lse)) : lse != -INFINITY) {
          if (bad++ == 0)
            sprintf(where, "LSE b%d h%d i%d: %g, want %g", b, h, i, (double)lse, want_lse);
          continue;
        }
        const uint16_t *o = out.o + at(s, &bf, 0, b, i, h);
        for (int e = 0; e < D; e++) {
          const double y = fg_test_to_float(s->dtype, o[e]), code = y * vis / z;
          const long bits = lrint(code);
          if (!(fabs(code - bits) < 0.25) || (!vis && y != 0)) {
            if (bad++ == 0)
              sprintf(where, "O b%d h%d i%d e%d: %g is not a sum of kept weights (%.3f)", b, h,
                      i, e, y, code);
            continue;
          }
          for (int j = e; j < bf.len_k[b]; j += D) {
            const int visible = fg_ref_visible(&bf.ra, b, i, j);
            const int want = visible && fg_ref_dropout_factor(&bf.rf, b * Hq + h, i, j) != 0;
            const int got = (int)((bits >> (j / D)) & 1);
            if (got != want && bad++ == 0)
              sprintf(where, "b%d h%d i%d j%d: kept %d, reference %d", b, h, i, j, got, want);
            if (visible) kept += got, n++;
          }
        }
      }
  const double frac = n ? (double)kept / n : 0, sigma = sqrt(q * (1 - q) / (n ? n : 1));
  printf("  dropout mask %s B=%d Sq=%d Sk=%d Hq=%d causal=%d %s window=%d p=%g: kept %.5f of %ld "
         "(1 - p16/65536 = %.5f, sigma %.1e), %ld bad (seed %llu)\n",
         s->dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", s->batch, s->seqlen_q, s->seqlen_k, Hq,
         s->causal, mode_name(s->mode), s->window, (double)s->dropout, frac, n, q, sigma, bad,
         (unsigned long long)seed);
  fflush(stdout);
  cr_assert_eq(bad, 0, "%ld elements break the mask; first: %s (seed %llu)", bad, where,
               (unsigned long long)seed);
  cr_assert_gt(n, 100000, "too few visible elements for the statistics: %ld", n);
  cr_assert_lt(fabs(frac - q), 5 * sigma, "kept fraction %.5f, want %.5f +- %.5f (seed %llu)",
               frac, q, 5 * sigma, (unsigned long long)seed);

  /* the same call again: the same bits; other seeds and offsets: others */
  const size_t nl = (size_t)s->batch * Hq * s->seqlen_q;
  const fagen_attention_features f0 = bf.feat;
  for (int k = 0; k < 4; k++) {
    bf.feat = f0;
    if (k == 1) bf.feat.dropout_seed ^= 1;
    if (k == 2) bf.feat.dropout_offset ^= 1;
    if (k == 3) bf.feat.dropout_offset ^= 1ull << 32;
    outs again;
    memset(&again, 0, sizeof again);
    run_forward(ctx, s, &bf, &again);
    const int same = memcmp(again.o, out.o, bf.n[3] * 2) == 0;
    cr_assert_eq(memcmp(again.lse, out.lse, nl * 4), 0, "change %d moved the LSE", k);
    if (k == 0) cr_assert(same, "the same call gave other O bits (seed %llu)",
                          (unsigned long long)seed);
    else cr_assert(!same, "change %d (seed, offset lo, offset hi) left O as it was", k);
    free(again.o), free(again.lse);
  }
  bf.feat = f0;
  free(out.o), free(out.lse);
  free_bufs(&bf);
  fagen_ctx_destroy(ctx);
}

Test(features_gpu, dropout_mask_read_back, .init = gpu_setup, .fini = gpu_teardown,
     .timeout = 600) {
  /* dtype B  Sq   Sk   Hq Hkv d    causal mode    window left right softcap alibi dropout */
  const fcase cases[] = {
      {FP, 2, 300, 512, 4, 2, 128, 0, DENSE, 0, 0, 0, 0, 0, 0.5f},
      {BF, 5, 200, 512, 4, 1, 128, 0, PACKED, 0, 0, 0, 0, 0, 0.1f},
      {FP, 3, 256, 384, 2, 2, 128, 0, PADDED, 0, 0, 0, 0, 0, 0.9f},
      {BF, 2, 300, 512, 4, 2, 128, 1, DENSE, 1, 200, -1, 0, 0, 0.5f},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_mask(&cases[i]);
}
