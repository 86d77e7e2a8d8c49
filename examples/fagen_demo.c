/* fagen-demo: one attention forward through the public C API — the README's
 * main job.  It allocates inputs with the CUDA runtime, calls
 * fagen_attention_forward, checks sampled rows against a float64 reference
 * and times the call with CUDA events.  Without a GPU it says so and exits 0.
 *
 *   fagen-demo [--batch B] [--seqlen S] [--heads H] [--heads-kv HK]
 *              [--head-dim D] [--causal] [--fp16]
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_ref.h"

#define CUDA_CHECK(call)                                                              \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      fprintf(stderr, "fagen-demo: %s failed: %s\n", #call, cudaGetErrorString(e_)); \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static int int_arg(const char *s, const char *name) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*end || v <= 0 || v > 1 << 24) {
    fprintf(stderr, "fagen-demo: %s takes a positive integer, not '%s'\n", name, s);
    exit(2);
  }
  return (int)v;
}

int main(int argc, char **argv) {
  int B = 2, S = 2048, H = 16, HK = 16, D = 128, causal = 0;
  fagen_dtype dt = FAGEN_DTYPE_BF16;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--batch")) B = int_arg(next, a), i++;
    else if (!strcmp(a, "--seqlen")) S = int_arg(next, a), i++;
    else if (!strcmp(a, "--heads")) H = HK = int_arg(next, a), i++;
    else if (!strcmp(a, "--heads-kv")) HK = int_arg(next, a), i++;
    else if (!strcmp(a, "--head-dim")) D = int_arg(next, a), i++;
    else if (!strcmp(a, "--causal")) causal = 1;
    else if (!strcmp(a, "--fp16")) dt = FAGEN_DTYPE_FP16;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("usage: fagen-demo [--batch B] [--seqlen S] [--heads H] [--heads-kv HK] "
             "[--head-dim D] [--causal] [--fp16]\n"
             "Runs one attention forward on the GPU, prints its error against a float64\n"
             "reference (sampled rows) and its speed.  Exits 0 without a GPU.\n");
      return 0;
    } else {
      fprintf(stderr, "fagen-demo: unknown option '%s' (see --help)\n", a);
      return 2;
    }
  }
  int ndev = 0;
  cudaError_t ce = cudaGetDeviceCount(&ndev);
  if (ce != cudaSuccess || ndev == 0) {
    printf("fagen-demo: no GPU here (%s); the attention call is skipped.\n",
           ce != cudaSuccess ? cudaGetErrorString(ce) : "no device");
    return 0;
  }
  struct cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));

  size_t nq = (size_t)B * S * H * D, nk = (size_t)B * S * HK * D;
  uint16_t *hq = malloc(nq * 2), *hk = malloc(nk * 2), *hv = malloc(nk * 2), *ho = malloc(nq * 2);
  uint64_t seed = fg_rand_seed(), rng = seed;
  for (size_t i = 0; i < nq; i++) hq[i] = fg_elem_from_float(dt, 2 * fg_rand_uniform(&rng));
  for (size_t i = 0; i < nk; i++) hk[i] = fg_elem_from_float(dt, fg_rand_uniform(&rng));
  for (size_t i = 0; i < nk; i++) hv[i] = fg_elem_from_float(dt, fg_rand_uniform(&rng));
  void *q, *k, *v, *o;
  CUDA_CHECK(cudaMalloc(&q, nq * 2));
  CUDA_CHECK(cudaMalloc(&k, nk * 2));
  CUDA_CHECK(cudaMalloc(&v, nk * 2));
  CUDA_CHECK(cudaMalloc(&o, nq * 2));
  CUDA_CHECK(cudaMemcpy(q, hq, nq * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(k, hk, nk * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(v, hv, nk * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(o, 0xff, nq * 2)); /* poison: every output must be written */

  fagen_ctx *ctx;
  if (fagen_ctx_create(&ctx) != FAGEN_OK) {
    fprintf(stderr, "fagen-demo: %s\n", fagen_last_error());
    return 1;
  }
  fagen_attention_args args;
  fagen_attention_args_init(&args);
  args.dtype = dt;
  args.batch = B;
  args.seqlen_q = args.seqlen_k = S;
  args.heads_q = H;
  args.heads_kv = HK;
  args.head_dim = D;
  args.causal = causal;
  args.q = q, args.k = k, args.v = v, args.o = o;
  fagen_variant chosen;
  char name[FAGEN_VARIANT_NAME_MAX] = "?";
  if (fagen_attention_select(ctx, &args, NULL, &chosen, NULL) == FAGEN_OK)
    fagen_variant_name(&chosen, name, sizeof name);
  if (fagen_attention_forward(ctx, &args, NULL) != FAGEN_OK) { /* compiles on first use */
    fprintf(stderr, "fagen-demo: %s\n", fagen_errmsg(ctx));
    return 1;
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(ho, o, nq * 2, cudaMemcpyDeviceToHost));

  /* Error against float64 on sampled rows. */
  fg_ref_args ref = {dt, B, S, S, H, HK, D, causal, 1.0 / sqrt((double)D), hq, hk, hv,
                     {(int64_t)S * H * D, (int64_t)H * D, D},
                     {(int64_t)S * HK * D, (int64_t)HK * D, D},
                     {(int64_t)S * HK * D, (int64_t)HK * D, D}, NULL};
  double num = 0, den = 0, lse;
  double *row = malloc(sizeof(double) * (size_t)D);
  int rows = 64, unwritten = 0;
  for (int r = 0; r < rows; r++) {
    int b = (int)(fabsf(fg_rand_uniform(&rng)) * B) % B;
    int h = (int)(fabsf(fg_rand_uniform(&rng)) * H) % H;
    int i = r == 0 ? 0 : r == 1 ? S - 1 : (int)(fabsf(fg_rand_uniform(&rng)) * S) % S;
    fg_ref_row(&ref, b, h, i, row, &lse);
    for (int d = 0; d < D; d++) {
      float got = fg_elem_to_float(dt, ho[(((size_t)b * S + i) * H + h) * D + d]);
      if (isnan(got)) unwritten++;
      num += (got - row[d]) * (got - row[d]);
      den += row[d] * row[d];
    }
  }
  double rel = sqrt(num / den);
  double tol = dt == FAGEN_DTYPE_BF16 ? 1e-2 : 2e-3;

  /* Speed: CUDA events around each call, median of 20 after 3 warm-ups. */
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  float ms[20];
  for (int it = -3; it < 20; it++) {
    CUDA_CHECK(cudaEventRecord(e0, 0));
    fagen_attention_forward(ctx, &args, NULL);
    CUDA_CHECK(cudaEventRecord(e1, 0));
    CUDA_CHECK(cudaEventSynchronize(e1));
    if (it >= 0) CUDA_CHECK(cudaEventElapsedTime(&ms[it], e0, e1));
  }
  qsort(ms, 20, sizeof ms[0], cmp_float);
  double med = (ms[9] + ms[10]) / 2;
  double flops = 4.0 * B * H * (double)S * S * D * (causal ? 0.5 : 1.0);
  printf("fagen-demo on %s: %s B=%d S=%d H=%d/%d D=%d%s\n", prop.name, name, B, S, H, HK, D,
         causal ? " causal" : "");
  printf("  error vs float64 (%d sampled rows): |O-ref|/|ref| = %.2e (tolerance %.0e)%s\n", rows,
         rel, tol, unwritten ? ", SOME OUTPUTS UNWRITTEN" : "");
  printf("  time: %.3f ms median of 20 -> %.1f TFLOPS (seed %llu)\n", med, flops / med * 1e-9,
         (unsigned long long)seed);
  fagen_ctx_destroy(ctx);
  cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o);
  free(hq), free(hk), free(hv), free(ho), free(row);
  return (rel < tol && !unwritten) ? 0 : 1;
}
