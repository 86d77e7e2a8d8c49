/* Forward attention on a GPU against a float64 CPU reference.  Skipped,
 * visibly, where no GPU is present.  Every run draws fresh inputs (the seed is
 * printed; FAGEN_TEST_SEED replays one) and poisons the outputs first. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fagen.h"
#include "fg_cuda.h"
#include "fg_test.h"

static const fg_cuda_api *cu;
static char *cache_dir;

static void gpu_setup(void) { cu = fg_test_gpu_begin(&cache_dir); }
static void gpu_teardown(void) { fg_test_gpu_end(cache_dir); }

#define CU_OK(call) cr_assert_eq((call), CUDA_SUCCESS, "%s", #call)

/* One test case: shape, layout, dtype. */
typedef struct shape {
  fagen_dtype dtype;
  int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, causal;
  int layout; /* 0 contiguous BSHD, 1 slices of a packed QKV, 2 BHSD */
  float scale;
} shape;

typedef struct result {
  double o_err, lse_err;
  int unwritten;
} result;

/* Element strides of tensor `which` (0 q, 1 k, 2 v, 3 o) and its allocation. */
static fagen_strides strides_of(const shape *s, int which, size_t *elems) {
  int S = (which == 1 || which == 2) ? s->seqlen_k : s->seqlen_q;
  int H = (which == 1 || which == 2) ? s->heads_kv : s->heads_q;
  int D = s->head_dim;
  fagen_strides st;
  if (s->layout == 1 && which != 3) { /* [B, S, 3, H, D] with this tensor at slot `which` */
    st.head = D;
    st.seq = (int64_t)3 * H * D + 16; /* padded rows, still 16-byte aligned */
    st.batch = st.seq * S;
  } else if (s->layout == 2) { /* [B, H, S, D] */
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

static const fagen_variant *forced_variant; /* set by run_forced */
static result run_forced(fagen_ctx *ctx, const shape *s, const fagen_variant *v);

/* Runs s with variant v forced and asserts what check() does, naming v. */
static void check_forced(fagen_ctx *ctx, const shape *s, const fagen_variant *v) {
  result r = run_forced(ctx, s, v);
  char name[FAGEN_VARIANT_NAME_MAX];
  fagen_variant_name(v, name, sizeof name);
  cr_assert_eq(r.unwritten, 0, "%s left %d outputs unwritten", name, r.unwritten);
  cr_assert_lt(r.o_err, s->dtype == FAGEN_DTYPE_BF16 ? 1e-2 : 2e-3, "%s: O error %.3e", name, r.o_err);
  cr_assert_lt(r.lse_err, 1e-4, "%s: LSE error %.3e", name, r.lse_err);
}

/* The sizes of a shape as call arguments (no tensors yet). */
static fagen_attention_args shape_args(const shape *s) {
  fagen_attention_args a;
  fagen_attention_args_init(&a);
  a.dtype = s->dtype;
  a.batch = s->batch;
  a.seqlen_q = s->seqlen_q;
  a.seqlen_k = s->seqlen_k;
  a.heads_q = s->heads_q;
  a.heads_kv = s->heads_kv;
  a.head_dim = s->head_dim;
  a.causal = s->causal;
  a.softmax_scale = s->scale;
  return a;
}

static result run_case(fagen_ctx *ctx, const shape *s, void *stream) {
  uint64_t seed = fg_test_seed(), rng = seed;
  size_t n[4];
  fagen_strides st[4];
  for (int i = 0; i < 4; i++) st[i] = strides_of(s, i, &n[i]);
  uint16_t *host[3];
  CUdeviceptr dev[4], dlse;
  for (int i = 0; i < 3; i++) {
    host[i] = malloc(n[i] * 2);
    /* q is drawn wider than k, v so that softmax rows are peaked, not flat */
    float amp = i == 0 ? 2.0f : 1.0f;
    for (size_t e = 0; e < n[i]; e++)
      host[i][e] = fg_test_from_float(s->dtype, amp * fg_test_uniform(&rng));
    CU_OK(cu->mem_alloc(&dev[i], n[i] * 2));
    CU_OK(cu->memcpy_htod(dev[i], host[i], n[i] * 2));
  }
  size_t lse_n = (size_t)s->batch * s->heads_q * s->seqlen_q;
  CU_OK(cu->mem_alloc(&dev[3], n[3] * 2));
  CU_OK(cu->mem_alloc(&dlse, lse_n * 4));
  /* Poison: 0xFFFF is a NaN in both fp16 and bf16, 0xFFFFFFFF a NaN in fp32. */
  CU_OK(cu->memset_d8(dev[3], 0xff, n[3] * 2));
  CU_OK(cu->memset_d8(dlse, 0xff, lse_n * 4));

  fagen_attention_args a = shape_args(s);
  a.q = (void *)dev[0];
  a.k = (void *)dev[1];
  a.v = (void *)dev[2];
  a.o = (void *)dev[3];
  a.lse = (float *)dlse;
  if (s->layout) {
    a.q_strides = st[0];
    a.k_strides = st[1];
    a.v_strides = st[2];
    a.o_strides = st[3];
  }
  a.variant = forced_variant;
  fagen_status rc = fagen_attention_forward(ctx, &a, stream);
  cr_assert_eq(rc, FAGEN_OK, "%s", fagen_errmsg(ctx));
  CU_OK(cu->ctx_synchronize());

  uint16_t *o = malloc(n[3] * 2);
  float *lse = malloc(lse_n * 4);
  CU_OK(cu->memcpy_dtoh(o, dev[3], n[3] * 2));
  CU_OK(cu->memcpy_dtoh(lse, dlse, lse_n * 4));

  fg_ref_args r = {s->dtype,  s->batch,  s->seqlen_q, s->seqlen_k, s->heads_q,
                   s->heads_kv, s->head_dim, s->causal,
                   s->scale > 0 ? s->scale : 1.0 / sqrt((double)s->head_dim),
                   host[0],   host[1],   host[2],     st[0],       st[1],
                   st[2],     NULL};
  double *ro = malloc(sizeof(double) * (size_t)s->batch * s->seqlen_q * s->heads_q * s->head_dim);
  double *rl = malloc(sizeof(double) * lse_n);
  fg_ref_attention(&r, ro, rl);

  result res = {0, 0, 0};
  double num = 0, den = 0, lnum = 0, lden = 0;
  for (int b = 0; b < s->batch; b++)
    for (int i = 0; i < s->seqlen_q; i++)
      for (int h = 0; h < s->heads_q; h++)
        for (int d = 0; d < s->head_dim; d++) {
          double ref = ro[(((size_t)b * s->seqlen_q + i) * s->heads_q + h) * s->head_dim + d];
          float got = fg_test_to_float(s->dtype, o[b * st[3].batch + i * st[3].seq + h * st[3].head + d]);
          if (isnan(got)) res.unwritten++;
          num += (got - ref) * (got - ref);
          den += ref * ref;
        }
  for (size_t i = 0; i < lse_n; i++) {
    if (isnan(lse[i])) {
      res.unwritten++;
      continue;
    }
    if (isinf(rl[i]) || isinf(lse[i])) { /* rows that see no key: both -inf */
      if (!(isinf(rl[i]) && isinf(lse[i]) && lse[i] < 0)) res.unwritten++;
      continue;
    }
    lnum += (lse[i] - rl[i]) * (lse[i] - rl[i]);
    lden += rl[i] * rl[i];
  }
  res.o_err = den > 0 ? sqrt(num / den) : sqrt(num);
  res.lse_err = lden > 0 ? sqrt(lnum / lden) : 0;
  if (!forced_variant)
  printf("  %s B=%d Sq=%d Sk=%d Hq=%d Hkv=%d d=%d causal=%d layout=%d: |O-ref|/|ref| %.2e, "
         "LSE %.2e (seed %llu)\n",
         s->dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", s->batch, s->seqlen_q, s->seqlen_k,
         s->heads_q, s->heads_kv, s->head_dim, s->causal, s->layout, res.o_err, res.lse_err,
         (unsigned long long)seed);
  for (int i = 0; i < 4; i++) cu->mem_free(dev[i]);
  cu->mem_free(dlse);
  for (int i = 0; i < 3; i++) free(host[i]);
  free(o), free(lse), free(ro), free(rl);
  return res;
}

static void check(const shape *s) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  result r = run_case(ctx, s, NULL);
  double tol = s->dtype == FAGEN_DTYPE_BF16 ? 1e-2 : 2e-3;
  cr_assert_eq(r.unwritten, 0, "%d outputs were not written (or NaN)", r.unwritten);
  cr_assert_lt(r.o_err, tol, "O error %.3e over %.0e", r.o_err, tol);
  cr_assert_lt(r.lse_err, 1e-4, "LSE error %.3e", r.lse_err);
  fagen_ctx_destroy(ctx);
}

#define BF FAGEN_DTYPE_BF16
#define FP FAGEN_DTYPE_FP16
#define GPU_TEST(name, ...)                                                       \
  Test(forward_gpu, name, .init = gpu_setup, .fini = gpu_teardown, .timeout = 600) { \
    const shape cases[] = {__VA_ARGS__};                                          \
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check(&cases[i]);  \
  }

/*               dtype B  Sq    Sk    Hq  Hkv d    causal layout scale */
GPU_TEST(seqlen_1_and_7,
         {BF, 2, 1, 1, 4, 4, 64, 0, 0, 0}, {FP, 2, 1, 1, 4, 4, 64, 1, 0, 0},
         {BF, 3, 7, 7, 2, 2, 128, 0, 0, 0}, {FP, 3, 7, 7, 2, 2, 128, 1, 0, 0})
GPU_TEST(seqlen_129_and_1000,
         {BF, 2, 129, 129, 4, 4, 128, 0, 0, 0}, {FP, 2, 129, 129, 4, 4, 128, 1, 0, 0},
         {BF, 1, 1000, 1000, 4, 2, 64, 1, 0, 0}, {FP, 1, 1000, 1000, 2, 2, 256, 0, 0, 0})
GPU_TEST(seqlen_4097, {BF, 1, 4097, 4097, 2, 2, 64, 1, 0, 0}, {FP, 1, 4097, 4097, 1, 1, 64, 0, 0, 0})
GPU_TEST(seqlen_q_differs_from_seqlen_k,
         {BF, 2, 100, 300, 4, 4, 64, 0, 0, 0}, {BF, 2, 100, 300, 4, 4, 64, 1, 0, 0},
         {FP, 2, 300, 100, 4, 4, 64, 1, 0, 0}, /* the first 200 rows see no key */
         {FP, 1, 1, 513, 8, 8, 128, 1, 0, 0})
GPU_TEST(gqa_ratios_1_2_8,
         {BF, 2, 200, 200, 8, 8, 128, 1, 0, 0}, {BF, 2, 200, 200, 8, 4, 128, 1, 0, 0},
         {FP, 2, 200, 200, 16, 2, 128, 0, 0, 0}, {FP, 1, 64, 333, 8, 1, 64, 1, 0, 0})
GPU_TEST(every_head_dim,
         {BF, 1, 150, 150, 2, 2, 32, 1, 0, 0}, {BF, 1, 150, 150, 2, 2, 64, 0, 0, 0},
         {FP, 1, 150, 150, 2, 2, 96, 1, 0, 0}, {FP, 1, 150, 150, 2, 2, 128, 0, 0, 0},
         {BF, 1, 150, 150, 2, 2, 160, 1, 0, 0}, {FP, 1, 150, 150, 2, 2, 192, 0, 0, 0},
         {BF, 1, 150, 150, 2, 2, 224, 1, 0, 0}, {FP, 1, 150, 150, 2, 2, 256, 1, 0, 0})
GPU_TEST(head_dims_served_by_the_next_size,
         {BF, 1, 90, 90, 2, 2, 8, 0, 0, 0}, {FP, 1, 90, 90, 2, 2, 40, 1, 0, 0},
         {BF, 1, 90, 90, 2, 2, 136, 0, 0, 0}, {FP, 1, 90, 90, 2, 2, 248, 1, 0, 0})
GPU_TEST(strided_views,
         {BF, 2, 177, 177, 4, 4, 64, 1, 1, 0}, {FP, 2, 177, 177, 4, 2, 128, 0, 1, 0},
         {BF, 2, 160, 96, 4, 2, 64, 0, 2, 0}, {FP, 2, 96, 160, 4, 4, 128, 1, 2, 0})
GPU_TEST(explicit_scale, {BF, 1, 256, 256, 2, 2, 64, 0, 0, 0.5f}, {FP, 1, 256, 256, 2, 2, 64, 1, 0, 0.05f})

/* The Hopper forward on a persistent grid of 2 or 5 CTAs (FAGEN_PERSISTENT_CTAS):
 * each CTA runs many output tiles, through causal pairs, GQA, odd lengths and
 * tiles whose rows see no key (Sq > Sk, causal: the first 200 rows), with one
 * Q tile and with two (prefetch_q: the Q tiles alternate, each with its own
 * barrier phases).  Elsewhere the cap changes nothing. */
Test(forward_gpu, few_persistent_ctas, .init = gpu_setup, .fini = gpu_teardown, .timeout = 600) {
  const shape cases[] = {
      {BF, 2, 1000, 1000, 4, 2, 64, 1, 0, 0}, {FP, 2, 1000, 1000, 4, 4, 64, 0, 0, 0},
      {FP, 2, 300, 100, 4, 4, 64, 1, 0, 0},   {BF, 2, 300, 100, 4, 2, 128, 1, 0, 0},
      {BF, 3, 333, 257, 4, 4, 128, 0, 0, 0},  {FP, 2, 200, 200, 8, 4, 256, 1, 0, 0},
      {BF, 1, 513, 513, 4, 4, 96, 1, 0, 0},   {BF, 2, 177, 177, 4, 4, 64, 1, 1, 0},
  };
  const char *caps[] = {"2", "5"};
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  int pq_runs = 0;
  for (int c = 0; c < 2; c++) {
    cr_assert_eq(setenv("FAGEN_PERSISTENT_CTAS", caps[c], 1), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      const shape *s = &cases[i];
      check(s); /* the selected variant */
      /* ... and, where it is a wgmma one, the same tiles with prefetch_q */
      fagen_attention_args probe = shape_args(s);
      fagen_variant v;
      cr_assert_eq(fagen_attention_select(ctx, &probe, NULL, &v, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
      if (v.op != FAGEN_OP_FWD_WGMMA) continue;
      v.prefetch_q = 1;
      if (fagen_variant_validate(&v, NULL, 0) != FAGEN_OK) continue;
      check_forced(ctx, s, &v);
      pq_runs++;
    }
  }
  unsetenv("FAGEN_PERSISTENT_CTAS");
  fagen_ctx_destroy(ctx);
  if (pq_runs == 0) cr_skip_test("no wgmma forward on this GPU (sm_90a only)");
}

GPU_TEST(batch_times_heads_over_65535, {BF, 1100, 3, 5, 64, 8, 32, 0, 0, 0}, {FP, 70000, 2, 2, 1, 1, 32, 1, 0, 0})

/* prepare, then capture the call into a CUDA graph and replay it. */
Test(forward_gpu, prepare_then_graph_capture, .init = gpu_setup, .fini = gpu_teardown) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  shape s = {BF, 2, 256, 256, 4, 4, 128, 1, 0, 0};
  fagen_attention_args probe = shape_args(&s);
  fagen_variant v;
  cr_assert_eq(fagen_attention_select(ctx, &probe, NULL, &v, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(fagen_prepare(ctx, &v, 1), FAGEN_OK, "%s", fagen_errmsg(ctx));

  size_t n = (size_t)2 * 256 * 4 * 128;
  CUdeviceptr q, k, vv, o;
  CU_OK(cu->mem_alloc(&q, n * 2));
  CU_OK(cu->mem_alloc(&k, n * 2));
  CU_OK(cu->mem_alloc(&vv, n * 2));
  CU_OK(cu->mem_alloc(&o, n * 2));
  uint16_t *h = malloc(n * 2);
  uint64_t rng = fg_test_seed();
  for (int t = 0; t < 3; t++) {
    for (size_t i = 0; i < n; i++) h[i] = fg_test_float_to_bf16(fg_test_uniform(&rng));
    CU_OK(cu->memcpy_htod(t == 0 ? q : t == 1 ? k : vv, h, n * 2));
  }
  CUstream stream;
  CU_OK(cu->stream_create(&stream, CU_STREAM_NON_BLOCKING));
  probe.q = (void *)q;
  probe.k = (void *)k;
  probe.v = (void *)vv;
  probe.o = (void *)o;
  CUgraph graph;
  CU_OK(cu->stream_begin_capture(stream, CU_STREAM_CAPTURE_MODE_GLOBAL));
  fagen_status st = fagen_attention_forward(ctx, &probe, stream);
  CU_OK(cu->stream_end_capture(stream, &graph));
  cr_assert_eq(st, FAGEN_OK, "%s", fagen_errmsg(ctx));
  CUgraphExec exec;
  CU_OK(cu->graph_instantiate(&exec, graph, 0));
  /* Eager result first, then poison and replay the graph: same bytes. */
  CU_OK(cu->memset_d8(o, 0xff, n * 2));
  cr_assert_eq(fagen_attention_forward(ctx, &probe, stream), FAGEN_OK);
  CU_OK(cu->stream_synchronize(stream));
  uint16_t *eager = malloc(n * 2), *replay = malloc(n * 2);
  CU_OK(cu->memcpy_dtoh(eager, o, n * 2));
  CU_OK(cu->memset_d8(o, 0xff, n * 2));
  CU_OK(cu->graph_launch(exec, stream));
  CU_OK(cu->stream_synchronize(stream));
  CU_OK(cu->memcpy_dtoh(replay, o, n * 2));
  cr_assert_eq(memcmp(eager, replay, n * 2), 0, "the graph replay differs from the eager call");
  int nan = 0;
  for (size_t i = 0; i < n; i++) nan += isnan(fg_test_bf16_to_float(replay[i]));
  cr_assert_eq(nan, 0);
  cu->graph_exec_destroy(exec);
  cu->graph_destroy(graph);
  cu->stream_destroy(stream);
  cu->mem_free(q), cu->mem_free(k), cu->mem_free(vv), cu->mem_free(o);
  free(h), free(eager), free(replay);
  fagen_ctx_destroy(ctx);
}

/* A second process finds the kernel in the disk cache: no NVRTC compile. */
static void count_compiles(void *user, fagen_log_level level, const char *msg) {
  (void)level;
  if (strncmp(msg, "compiled ", 9) == 0) ++*(int *)user;
  if (strncmp(msg, "cache hit", 9) == 0) *(int *)user += 100;
}

static int child_forward(void) {
  /* A fresh process: CUDA is initialized here, not inherited. */
  fg_err err;
  const fg_cuda_api *c = fg_cuda(&err);
  if (!c) return 10;
  CUdevice dev;
  CUcontext pc;
  if (c->device_get(&dev, 0) || c->primary_ctx_retain(&pc, dev) || c->ctx_set_current(pc)) return 11;
  cu = c;
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  int events = 0;
  fagen_set_log_callback(ctx, count_compiles, &events, FAGEN_LOG_DEBUG);
  shape s = {FP, 1, 300, 300, 2, 2, 64, 1, 0, 0};
  result r = run_case(ctx, &s, NULL);
  fagen_ctx_destroy(ctx);
  if (r.unwritten || r.o_err > 2e-3) return 12;
  return events == 1 ? 1 : events == 100 ? 2 : 13; /* 1: compiled, 2: disk hit */
}

Test(forward_gpu, second_process_hits_the_disk_cache, .timeout = 300) {
  const char *why;
  cache_dir = fg_test_tmpdir();
  setenv("FAGEN_CACHE_DIR", cache_dir, 1);
  /* Probe for a GPU in a child: this process must not initialize CUDA before forking. */
  pid_t p = fork();
  if (p == 0) _exit(fg_test_gpu_available(&why) ? 0 : 1);
  int st;
  waitpid(p, &st, 0);
  if (WEXITSTATUS(st) != 0) {
    fg_test_rmrf(cache_dir);
    cr_skip_test("no GPU");
  }
  int want[2] = {1, 2};
  for (int i = 0; i < 2; i++) {
    p = fork();
    if (p == 0) _exit(child_forward());
    waitpid(p, &st, 0);
    cr_assert(WIFEXITED(st), "child %d crashed", i);
    cr_assert_eq(WEXITSTATUS(st), want[i], "process %d: code %d (1 compiled, 2 cache hit)", i,
                 WEXITSTATUS(st));
  }
  fg_test_rmrf(cache_dir);
  free(cache_dir);
}

/* Every valid tile candidate of a case computes the same function: forced
 * through args.variant on odd shapes (ragged tiles, seqlen_q != seqlen_k,
 * GQA), causal and not.  Candidates are compiled first, in threads. */

Test(forward_gpu, every_tile_candidate_agrees, .init = gpu_setup, .fini = gpu_teardown, .timeout = 900) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  const int dims[] = {64, 128};
  fagen_variant all[1024];
  int n = 0;
  for (int di = 0; di < 2; di++)
    for (int causal = 0; causal < 2; causal++) {
      fagen_attention_args probe;
      fagen_attention_args_init(&probe);
      probe.batch = probe.heads_q = probe.heads_kv = 1;
      probe.seqlen_q = probe.seqlen_k = 64;
      probe.head_dim = dims[di];
      probe.causal = causal;
      fagen_variant base, cand[1024];
      size_t nc;
      cr_assert_eq(fagen_attention_select(ctx, &probe, NULL, &base, NULL), FAGEN_OK);
      /* Both forward families where the device runs both (sm_90a). */
      for (int fam = 0; fam < 2; fam++) {
        if (fam == 1) {
          if (base.op != FAGEN_OP_FWD_WGMMA) break;
          base.op = FAGEN_OP_FWD;
        }
        cr_assert_eq(fagen_variant_candidates(&base, cand, 1024, &nc), FAGEN_OK, "%zu candidates", nc);
        for (size_t k = 0; k < nc; k++)
          if (fagen_variant_validate(&cand[k], NULL, 0) == FAGEN_OK) {
            cr_assert_lt(n, 1024);
            all[n++] = cand[k];
          }
      }
    }
  cr_assert_eq(fg_test_compile_all(ctx, all, n, 16), 0, "a candidate failed to compile: %s",
               fagen_errmsg(ctx));
  int stages2 = 0, pingpong = 0, prefetch_q = 0;
  /* Three CTAs for the wgmma family's 24 (causal: 16) work items: each CTA
     runs several output tiles, so the Q tiles of prefetch_q alternate. */
  cr_assert_eq(setenv("FAGEN_PERSISTENT_CTAS", "3", 1), 0);
  for (int i = 0; i < n; i++) {
    shape s = {BF, 2, 333, 257, 4, 2, all[i].head_dim, all[i].causal, 0, 0};
    check_forced(ctx, &s, &all[i]); /* bf16: the O limit is 1e-2, as before */
    stages2 += all[i].stages == 2;
    pingpong += all[i].pingpong;
    prefetch_q += all[i].prefetch_q;
  }
  cr_assert_gt(stages2, 0, "no two-stage candidate was exercised");
  unsetenv("FAGEN_PERSISTENT_CTAS");
  if (all[0].target.arch == 90) {
    cr_assert_gt(pingpong, 0, "no ping-pong candidate was exercised");
    cr_assert_gt(prefetch_q, 0, "no prefetch_q candidate was exercised");
  }
  printf("  %d tile candidates agree with the float64 reference\n", n);
  fagen_ctx_destroy(ctx);
}

/* Eight threads race for one uncached variant on one context: it is compiled
 * and loaded once, and every thread's call is right. */
typedef struct race {
  fagen_ctx *ctx;
  const fagen_variant *v;
  fagen_status st;
} race;

static void *race_prepare(void *arg) {
  race *r = arg;
  r->st = fagen_prepare(r->ctx, r->v, 1);
  return NULL;
}

static void count_compiled(void *user, fagen_log_level level, const char *msg) {
  (void)level;
  if (strncmp(msg, "compiled ", 9) == 0) __atomic_add_fetch((int *)user, 1, __ATOMIC_SEQ_CST);
}

Test(forward_gpu, threads_share_one_context, .init = gpu_setup, .fini = gpu_teardown) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  int compiles = 0;
  fagen_set_log_callback(ctx, count_compiled, &compiles, FAGEN_LOG_INFO);
  shape s = {FP, 1, 200, 200, 4, 4, 96, 1, 0, 0};
  fagen_attention_args probe;
  fagen_attention_args_init(&probe);
  probe.dtype = s.dtype;
  probe.batch = 1;
  probe.seqlen_q = probe.seqlen_k = 200;
  probe.heads_q = probe.heads_kv = 4;
  probe.head_dim = 96;
  probe.causal = 1;
  fagen_variant v;
  cr_assert_eq(fagen_attention_select(ctx, &probe, NULL, &v, NULL), FAGEN_OK);
  race r[8];
  pthread_t th[8];
  for (int i = 0; i < 8; i++) {
    r[i] = (race){ctx, &v, FAGEN_E_INTERNAL};
    pthread_create(&th[i], NULL, race_prepare, &r[i]);
  }
  for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 8; i++) cr_assert_eq(r[i].st, FAGEN_OK, "thread %d: %s", i, fagen_errmsg(ctx));
  cr_assert_eq(compiles, 1, "%d compiles for one variant", compiles);
  result res = run_case(ctx, &s, NULL);
  cr_assert_eq(res.unwritten, 0);
  cr_assert_lt(res.o_err, 2e-3);
  fagen_ctx_destroy(ctx);
}

static result run_forced(fagen_ctx *ctx, const shape *s, const fagen_variant *v) {
  forced_variant = v;
  result r = run_case(ctx, s, NULL);
  forced_variant = NULL;
  return r;
}
