/* Backward attention on a GPU against a float64 CPU reference (and the
 * deterministic mode against itself, bitwise).  Skipped, visibly, where no GPU
 * is present.  Fresh inputs every run (the seed is printed; FAGEN_TEST_SEED
 * replays one); gradients are poisoned with NaN first. */
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
static const fagen_variant *forced_variant; /* args.variant of check()'s calls, or NULL */

static void gpu_setup(void) { cu = fg_test_gpu_begin(&cache_dir); }
static void gpu_teardown(void) { fg_test_gpu_end(cache_dir); }

#define CU_OK(call) cr_assert_eq((call), CUDA_SUCCESS, "%s", #call)

typedef struct shape {
  fagen_dtype dtype;
  int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, causal;
  int layout; /* 0 contiguous [B, S, H, D]; 1 q/k/v and dq/dk/dv slices of packed
                 [B, S, 3, H, D] buffers (needs Sq = Sk, Hq = Hkv); 2 [B, H, S, D] */
  int deterministic;
  int own_workspace; /* 1: the test passes a workspace of the queried size */
} shape;

/* Tensors: 0 q, 1 k, 2 v, 3 o, 4 dout, 5 dq, 6 dk, 7 dv. */
enum { NT = 8 };
static int is_kv(int t) { return t == 1 || t == 2 || t == 6 || t == 7; }

static fagen_strides strides_of(const shape *s, int t, size_t *elems) {
  const int S = is_kv(t) ? s->seqlen_k : s->seqlen_q, H = is_kv(t) ? s->heads_kv : s->heads_q;
  const int D = s->head_dim;
  fagen_strides st;
  if (s->layout == 1 && t != 3 && t != 4) { /* slot t % 5 of a packed QKV (or dQKV) buffer */
    st.head = D;
    st.seq = (int64_t)3 * H * D + 8;
    st.batch = st.seq * S;
  } else if (s->layout == 2) {
    st.seq = D;
    st.head = (int64_t)S * D;
    st.batch = (int64_t)H * S * D;
  } else {
    st.head = D;
    st.seq = (int64_t)H * D;
    st.batch = (int64_t)S * H * D;
  }
  *elems = (size_t)(st.batch * s->batch);
  return st;
}

typedef struct grads {
  uint16_t *g[3]; /* dq, dk, dv as written (strided) */
  size_t n[3];
} grads;

typedef struct run {
  uint16_t *host[NT];
  CUdeviceptr dev[NT], lse, ws;
  size_t n[NT];
  fagen_strides st[NT];
  fagen_attention_bwd_args b;
} run;

/* Inputs, the forward (O and LSE from fagen), and the backward's arguments. */
static void setup_run(fagen_ctx *ctx, const shape *s, run *r, uint64_t *rng) {
  memset(r, 0, sizeof *r);
  for (int t = 0; t < NT; t++) {
    r->st[t] = strides_of(s, t, &r->n[t]);
    CU_OK(cu->mem_alloc(&r->dev[t], r->n[t] * 2));
    if (t == 3 || t >= 5) continue;
    r->host[t] = malloc(r->n[t] * 2);
    float amp = t == 0 ? 2.0f : 1.0f; /* peaked softmax rows */
    for (size_t e = 0; e < r->n[t]; e++)
      r->host[t][e] = fg_test_from_float(s->dtype, amp * fg_test_uniform(rng));
    CU_OK(cu->memcpy_htod(r->dev[t], r->host[t], r->n[t] * 2));
  }
  size_t rows = (size_t)s->batch * s->heads_q * s->seqlen_q;
  CU_OK(cu->mem_alloc(&r->lse, rows * 4));

  fagen_attention_args f;
  fagen_attention_args_init(&f);
  f.dtype = s->dtype;
  f.batch = s->batch;
  f.seqlen_q = s->seqlen_q;
  f.seqlen_k = s->seqlen_k;
  f.heads_q = s->heads_q;
  f.heads_kv = s->heads_kv;
  f.head_dim = s->head_dim;
  f.causal = s->causal;
  f.q = (void *)r->dev[0];
  f.k = (void *)r->dev[1];
  f.v = (void *)r->dev[2];
  f.o = (void *)r->dev[3];
  f.lse = (float *)r->lse;
  f.q_strides = r->st[0];
  f.k_strides = r->st[1];
  f.v_strides = r->st[2];
  f.o_strides = r->st[3];
  cr_assert_eq(fagen_attention_forward(ctx, &f, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));

  fagen_attention_bwd_args *b = &r->b;
  fagen_attention_bwd_args_init(b);
  b->dtype = s->dtype;
  b->batch = s->batch;
  b->seqlen_q = s->seqlen_q;
  b->seqlen_k = s->seqlen_k;
  b->heads_q = s->heads_q;
  b->heads_kv = s->heads_kv;
  b->head_dim = s->head_dim;
  b->causal = s->causal;
  b->q = (void *)r->dev[0];
  b->k = (void *)r->dev[1];
  b->v = (void *)r->dev[2];
  b->o = (void *)r->dev[3];
  b->dout = (void *)r->dev[4];
  b->dq = (void *)r->dev[5];
  b->dk = (void *)r->dev[6];
  b->dv = (void *)r->dev[7];
  b->lse = (const float *)r->lse;
  fagen_strides *bs[NT] = {&b->q_strides,  &b->k_strides,  &b->v_strides,  &b->o_strides,
                           &b->dout_strides, &b->dq_strides, &b->dk_strides, &b->dv_strides};
  for (int t = 0; t < NT; t++) *bs[t] = r->st[t];
  b->deterministic = s->deterministic;
  b->variant = forced_variant;
  if (s->own_workspace) {
    size_t bytes;
    cr_assert_eq(fagen_attention_backward_workspace(ctx, b, &bytes), FAGEN_OK);
    CU_OK(cu->mem_alloc(&r->ws, bytes));
    b->workspace = (void *)r->ws;
    b->workspace_bytes = bytes;
  }
}

/* Poisons dq, dk, dv, runs the backward and copies the gradients back. */
static grads backward(fagen_ctx *ctx, run *r) {
  grads g;
  for (int i = 0; i < 3; i++) {
    CU_OK(cu->memset_d8(r->dev[5 + i], 0xff, r->n[5 + i] * 2));
  }
  fagen_status st = fagen_attention_backward(ctx, &r->b, NULL);
  cr_assert_eq(st, FAGEN_OK, "%s", fagen_errmsg(ctx));
  CU_OK(cu->ctx_synchronize());
  for (int i = 0; i < 3; i++) {
    g.n[i] = r->n[5 + i];
    g.g[i] = malloc(g.n[i] * 2);
    CU_OK(cu->memcpy_dtoh(g.g[i], r->dev[5 + i], g.n[i] * 2));
  }
  return g;
}

static void free_grads(grads *g) {
  for (int i = 0; i < 3; i++) free(g->g[i]);
}

static void free_run(run *r) {
  for (int t = 0; t < NT; t++) {
    cu->mem_free(r->dev[t]);
    free(r->host[t]);
  }
  cu->mem_free(r->lse);
  if (r->ws) cu->mem_free(r->ws);
}

/* ||got - ref|| / ||ref|| of one gradient, counting NaN (unwritten) elements. */
static double rel_err(const shape *s, const uint16_t *got, fagen_strides st, const double *ref,
                      int S, int H, int *nan) {
  double num = 0, den = 0;
  for (int b = 0; b < s->batch; b++)
    for (int i = 0; i < S; i++)
      for (int h = 0; h < H; h++)
        for (int d = 0; d < s->head_dim; d++) {
          double x = ref[(((size_t)b * S + i) * H + h) * s->head_dim + d];
          float y = fg_test_to_float(s->dtype, got[b * st.batch + i * st.seq + h * st.head + d]);
          if (isnan(y)) {
            ++*nan;
            continue;
          }
          num += (y - x) * (y - x);
          den += x * x;
        }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void check(const shape *s) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  uint64_t seed = fg_test_seed(), rng = seed;
  run r;
  setup_run(ctx, s, &r, &rng);
  fagen_variant ran;
  char name[FAGEN_VARIANT_NAME_MAX];
  cr_assert_eq(fagen_attention_backward_select(ctx, &r.b, NULL, &ran, NULL), FAGEN_OK, "%s",
               fagen_errmsg(ctx));
  fagen_variant_name(&ran, name, sizeof name);
  grads g = backward(ctx, &r);

  const size_t nq = (size_t)s->batch * s->seqlen_q * s->heads_q * s->head_dim;
  const size_t nk = (size_t)s->batch * s->seqlen_k * s->heads_kv * s->head_dim;
  double *rq = malloc(nq * 8), *rk = malloc(nk * 8), *rv = malloc(nk * 8);
  fg_ref_args ra = {s->dtype,   s->batch,   s->seqlen_q, s->seqlen_k, s->heads_q,
                    s->heads_kv, s->head_dim, s->causal,   1.0 / sqrt((double)s->head_dim),
                    r.host[0],  r.host[1],  r.host[2],   r.st[0],     r.st[1],
                    r.st[2],    NULL};
  fg_ref_attention_bwd(&ra, r.host[4], r.st[4], rq, rk, rv);
  int nan = 0;
  double e[3] = {rel_err(s, g.g[0], r.st[5], rq, s->seqlen_q, s->heads_q, &nan),
                 rel_err(s, g.g[1], r.st[6], rk, s->seqlen_k, s->heads_kv, &nan),
                 rel_err(s, g.g[2], r.st[7], rv, s->seqlen_k, s->heads_kv, &nan)};
  printf("  %s B=%d Sq=%d Sk=%d Hq=%d Hkv=%d d=%d causal=%d layout=%d det=%d ws=%d: "
         "dQ %.2e dK %.2e dV %.2e (%s, seed %llu)\n",
         s->dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", s->batch, s->seqlen_q, s->seqlen_k,
         s->heads_q, s->heads_kv, s->head_dim, s->causal, s->layout, s->deterministic,
         s->own_workspace, e[0], e[1], e[2], name, (unsigned long long)seed);
  const double tol = s->dtype == FAGEN_DTYPE_BF16 ? 1e-2 : 5e-3;
  cr_assert_eq(nan, 0, "%s: %d gradient elements were not written (or NaN)", name, nan);
  const char *what[3] = {"dQ", "dK", "dV"};
  for (int i = 0; i < 3; i++)
    cr_assert_lt(e[i], tol, "%s: %s error %.3e over %.0e (seed %llu)", name, what[i], e[i], tol,
                 (unsigned long long)seed);

  /* Run it again: the deterministic mode gives the same bytes; the default
   * mode too for dK and dV (only dQ uses atomics). */
  grads g2 = backward(ctx, &r);
  for (int i = s->deterministic ? 0 : 1; i < 3; i++)
    cr_assert_eq(memcmp(g.g[i], g2.g[i], g.n[i] * 2), 0, "%s: %s differs between two runs", name,
                 what[i]);
  free_grads(&g2);
  free_grads(&g);
  free(rq), free(rk), free(rv);
  free_run(&r);
  fagen_ctx_destroy(ctx);
}

#define BF FAGEN_DTYPE_BF16
#define FP FAGEN_DTYPE_FP16
#define GPU_TEST(name, ...)                                                              \
  Test(backward_gpu, name, .init = gpu_setup, .fini = gpu_teardown, .timeout = 900) {   \
    const shape cases[] = {__VA_ARGS__};                                                 \
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check(&cases[i]);        \
  }

/*               dtype B  Sq   Sk   Hq  Hkv d    causal layout det ws */
GPU_TEST(seqlen_1_and_7,
         {BF, 2, 1, 1, 4, 4, 64, 0, 0, 0, 0}, {FP, 2, 1, 1, 4, 4, 64, 1, 0, 1, 0},
         {BF, 3, 7, 7, 2, 2, 128, 0, 0, 0, 1}, {FP, 3, 7, 7, 2, 2, 128, 1, 0, 1, 1})
GPU_TEST(odd_lengths,
         {BF, 2, 129, 129, 4, 4, 128, 0, 0, 0, 0}, {FP, 2, 129, 129, 4, 4, 128, 1, 0, 0, 0},
         {BF, 1, 300, 300, 2, 2, 64, 1, 0, 1, 0}, {FP, 1, 250, 250, 2, 2, 256, 0, 0, 0, 0})
GPU_TEST(seqlen_q_differs_from_seqlen_k,
         {BF, 2, 100, 300, 4, 4, 64, 0, 0, 0, 0}, {BF, 2, 100, 300, 4, 4, 64, 1, 0, 1, 0},
         {FP, 2, 300, 100, 4, 4, 64, 1, 0, 0, 0}, /* the first 200 rows see no key */
         {FP, 1, 1, 513, 4, 4, 128, 1, 0, 0, 0})
GPU_TEST(gqa_ratios_1_2_8,
         {BF, 2, 200, 200, 8, 8, 128, 1, 0, 0, 0}, {BF, 2, 200, 200, 8, 4, 128, 1, 0, 1, 0},
         {FP, 1, 200, 200, 16, 2, 128, 0, 0, 0, 0}, {BF, 1, 64, 333, 8, 1, 64, 1, 0, 0, 0})
GPU_TEST(every_head_dim,
         {BF, 1, 150, 150, 2, 2, 32, 1, 0, 0, 0}, {BF, 1, 150, 150, 2, 2, 64, 0, 0, 1, 0},
         {FP, 1, 150, 150, 2, 2, 96, 1, 0, 0, 0}, {FP, 1, 150, 150, 2, 2, 128, 0, 0, 1, 0},
         {BF, 1, 150, 150, 2, 2, 160, 1, 0, 0, 0}, {FP, 1, 150, 150, 2, 2, 192, 0, 0, 0, 0},
         {BF, 1, 150, 150, 2, 2, 224, 1, 0, 1, 0}, {FP, 1, 150, 150, 2, 2, 256, 1, 0, 0, 0})
GPU_TEST(head_dims_served_by_the_next_size,
         {BF, 1, 90, 90, 2, 2, 8, 0, 0, 0, 0}, {FP, 1, 90, 90, 2, 2, 40, 1, 0, 1, 0},
         {BF, 1, 90, 90, 2, 2, 136, 0, 0, 0, 0}, {FP, 1, 90, 90, 2, 2, 248, 1, 0, 0, 0})
GPU_TEST(strided_views,
         {BF, 2, 177, 177, 4, 4, 64, 1, 1, 0, 0}, {FP, 2, 177, 177, 4, 4, 128, 0, 1, 1, 0},
         {BF, 2, 160, 96, 4, 2, 64, 0, 2, 0, 1}, {FP, 2, 96, 160, 4, 4, 128, 1, 2, 1, 0})
/* From 2048 keys the causal Hopper backward runs its grid in chunks of
 * (batch, kv head) pairs (fg_bwd_lpt_heads): here 10 pairs, which on 132
 * SMs make chunks of 1 + 9 pairs with 16 key blocks (2048 / 128, one wave)
 * or 32 (4096 / 128, two waves), and 5 + 5 with 64 (4096 / 64).  Few
 * queries keep the float64 reference cheap; every key block has work. */
GPU_TEST(causal_grid_order_in_chunks,
         {BF, 2, 130, 2048, 10, 5, 128, 1, 0, 0, 0}, {FP, 2, 257, 4096, 5, 5, 64, 1, 0, 0, 0},
         {BF, 2, 64, 4096, 5, 5, 256, 1, 0, 0, 0})
GPU_TEST(long_sequence, {BF, 1, 1500, 1500, 2, 1, 128, 1, 0, 0, 1}, {FP, 1, 1100, 1100, 1, 1, 64, 0, 0, 1, 0})

/* ---- the Hopper backward (bwdwg) and the mma.sync one beside it ---------- */

/* The variant a plain non-deterministic call of head_dim d selects here. */
static fagen_variant probe_select(fagen_ctx *ctx, int head_dim) {
  fagen_attention_bwd_args b;
  fagen_attention_bwd_args_init(&b);
  b.batch = b.heads_q = b.heads_kv = 1;
  b.seqlen_q = b.seqlen_k = 64;
  b.head_dim = head_dim;
  fagen_variant v;
  cr_assert_eq(fagen_attention_backward_select(ctx, &b, NULL, &v, NULL), FAGEN_OK, "%s",
               fagen_errmsg(ctx));
  return v;
}

/* Candidates are compiled first, in threads (as the forward's sweep). */

/* Every valid bwdwg tile candidate (head_dim 64, 96, 128, 256; causal and not;
 * bf16 and fp16) computes the same gradients: forced through args.variant on
 * odd shapes — ragged tiles with seqlen_q != seqlen_k both ways (rows that see
 * no key under causal), GQA groups of 2 and 3, a [B, H, S, D] layout and a
 * head_dim below the compiled one (TMA's zero fill past the columns). */
Test(backward_gpu, every_bwdwg_candidate_agrees, .init = gpu_setup, .fini = gpu_teardown,
     .timeout = 1800) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  fagen_variant base = probe_select(ctx, 128);
  if (base.target.arch != 90 || !base.target.arch_specific) {
    fagen_ctx_destroy(ctx);
    cr_skip_test("the wgmma backward runs on sm_90a; this GPU is sm_%d%s", base.target.arch,
                 base.target.arch_specific ? "a" : "");
  }
  cr_assert_eq(base.op, FAGEN_OP_BWD_WGMMA, "a plain d128 call on sm_90a selects bwdwg");
  const int dims[] = {64, 96, 128, 256};
  fagen_variant all[64];
  int n = 0;
  for (int di = 0; di < 4; di++)
    for (int causal = 0; causal < 2; causal++)
      for (int dt = 0; dt < 2; dt++) {
        base.head_dim = dims[di];
        base.causal = causal;
        base.dtype = dt ? FAGEN_DTYPE_FP16 : FAGEN_DTYPE_BF16;
        fagen_variant cand[32];
        size_t nc;
        cr_assert_eq(fagen_variant_candidates(&base, cand, 32, &nc), FAGEN_OK);
        for (size_t k = 0; k < nc; k++)
          if (fagen_variant_validate(&cand[k], NULL, 0) == FAGEN_OK) {
            cr_assert_lt(n, 64);
            all[n++] = cand[k];
          }
      }
  /* d64: 4, d96: 2, d128: 2, d256: 2 tilings (test_variant's
     bwdwg_candidates), x 4 */
  cr_assert_eq(n, 40, "%d bwdwg candidates", n);
  cr_assert_eq(fg_test_compile_all(ctx, all, n, 8), 0, "a candidate failed to compile: %s",
               fagen_errmsg(ctx));
  for (int i = 0; i < n; i++) {
    const fagen_variant *v = &all[i];
    const shape shapes[] = {
        /* dtype   B  Sq   Sk    Hq Hkv d            causal     layout det ws */
        {v->dtype, 2, 129, 1000, 4, 2, v->head_dim, v->causal, 0, 0, 0},
        {v->dtype, 1, 333, 200, 6, 2, v->head_dim - 8, v->causal, 2, 0, 1}};
    forced_variant = v;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) check(&shapes[k]);
    forced_variant = NULL;
  }
  printf("  %d bwdwg tile candidates agree with the float64 reference\n", n);
  fagen_ctx_destroy(ctx);
}

/* With FAGEN_BWD_WGMMA=0 the mma.sync backward serves the head dims that
 * bwdwg takes on sm_90a (so both families stay tested there); elsewhere it
 * serves them anyway. */
Test(backward_gpu, mma_sync_family_with_wgmma_off, .init = gpu_setup, .fini = gpu_teardown,
     .timeout = 900) {
  setenv("FAGEN_BWD_WGMMA", "0", 1);
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  for (int d = 64; d <= 128; d += 32)
    cr_assert_eq(probe_select(ctx, d).op, FAGEN_OP_BWD, "head_dim %d", d);
  fagen_ctx_destroy(ctx);
  const shape cases[] = {
      /* dtype B  Sq   Sk    Hq Hkv d    causal layout det ws */
      {BF, 2, 129, 1000, 4, 2, 64, 1, 0, 0, 0},
      {FP, 2, 129, 1000, 4, 2, 96, 0, 0, 0, 1},
      {BF, 1, 333, 200, 6, 2, 120, 1, 2, 0, 0}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check(&cases[i]);
  unsetenv("FAGEN_BWD_WGMMA");
}