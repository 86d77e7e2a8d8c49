/*
 * fagen-jax-cbench — forward + backward attention called from C, timed the
 * way bench/jax_train.py times the same call through JAX: `reps` calls queued
 * back to back on one stream between two CUDA events, after a warm-up, the
 * median of `rounds` such measurements divided by reps.  This is the
 * "same kernels from C" side of issue 8's speed criterion.
 *   fagen-jax-cbench B SQ SK HQ HKV D CAUSAL [bf16|fp16] [reps] [rounds]
 * Prints one line: "c_fwdbwd_ms B SQ SK HQ HKV D CAUSAL DTYPE MS".
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

#define FK(ctx, x)                                                                    \
  do {                                                                                \
    fagen_status s_ = (x);                                                            \
    if (s_ != FAGEN_OK) {                                                             \
      fprintf(stderr, "%s: %s: %s\n", #x, fagen_status_name(s_), fagen_errmsg(ctx)); \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

/* A device buffer of n 16-bit values drawn at random in [-1, 1) (bf16 or fp16
 * bit patterns of small numbers: exponent field chosen so the value is < 1). */
static void *fg_random16(size_t n, int bf16, uint64_t *rng) {
  uint16_t *h = malloc(n * sizeof *h);
  if (!h) exit(1);
  for (size_t i = 0; i < n; i++) {
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    float f = (float)((*rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
    uint32_t u;
    memcpy(&u, &f, 4);
    if (bf16) {
      h[i] = (uint16_t)(u >> 16);
    } else { /* fp16 from fp32 for |f| < 1 (no overflow, flush tiny values) */
      uint32_t sign = (u >> 16) & 0x8000u;
      int e = (int)((u >> 23) & 0xff) - 127 + 15;
      h[i] = e <= 0 ? (uint16_t)sign : (uint16_t)(sign | ((uint32_t)e << 10) | ((u >> 13) & 0x3ff));
    }
  }
  void *d;
  CK(cudaMalloc(&d, n * 2));
  CK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
  free(h);
  return d;
}

static int fg_cmp(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: %s B SQ SK HQ HKV D CAUSAL [bf16|fp16] [reps] [rounds]\n", argv[0]);
    return 2;
  }
  int B = atoi(argv[1]), Sq = atoi(argv[2]), Sk = atoi(argv[3]), Hq = atoi(argv[4]);
  int Hkv = atoi(argv[5]), D = atoi(argv[6]), causal = atoi(argv[7]);
  int bf16 = argc <= 8 || strcmp(argv[8], "fp16") != 0;
  int reps = argc > 9 ? atoi(argv[9]) : 20, rounds = argc > 10 ? atoi(argv[10]) : 7;
  if (reps < 1 || rounds < 1 || rounds > 64) return 2;
  size_t nq = (size_t)B * Sq * Hq * D, nk = (size_t)B * Sk * Hkv * D;
  uint64_t rng = 12345;
  void *q = fg_random16(nq, bf16, &rng), *k = fg_random16(nk, bf16, &rng);
  void *v = fg_random16(nk, bf16, &rng), *dout = fg_random16(nq, bf16, &rng);
  void *o, *dq, *dk, *dv, *ws;
  float *lse;
  CK(cudaMalloc(&o, nq * 2));
  CK(cudaMalloc(&dq, nq * 2));
  CK(cudaMalloc(&dk, nk * 2));
  CK(cudaMalloc(&dv, nk * 2));
  CK(cudaMalloc((void **)&lse, (size_t)B * Hq * Sq * 4));

  fagen_ctx *ctx;
  FK(NULL, fagen_ctx_create(&ctx));
  fagen_attention_args f;
  fagen_attention_args_init(&f);
  f.dtype = bf16 ? FAGEN_DTYPE_BF16 : FAGEN_DTYPE_FP16;
  f.batch = B, f.seqlen_q = Sq, f.seqlen_k = Sk, f.heads_q = Hq, f.heads_kv = Hkv;
  f.head_dim = D, f.causal = causal;
  f.q = q, f.k = k, f.v = v, f.o = o, f.lse = lse;
  fagen_attention_bwd_args b;
  fagen_attention_bwd_args_init(&b);
  b.dtype = f.dtype;
  b.batch = B, b.seqlen_q = Sq, b.seqlen_k = Sk, b.heads_q = Hq, b.heads_kv = Hkv;
  b.head_dim = D, b.causal = causal;
  b.q = q, b.k = k, b.v = v, b.o = o, b.dout = dout, b.lse = lse;
  b.dq = dq, b.dk = dk, b.dv = dv;
  size_t wsb = 0;
  FK(ctx, fagen_attention_backward_workspace(ctx, &b, &wsb));
  CK(cudaMalloc(&ws, wsb ? wsb : 16));
  b.workspace = ws, b.workspace_bytes = wsb;

  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float ms[64];
  for (int r = -1; r < rounds; r++) { /* round -1: warm-up (compile, load) */
    CK(cudaEventRecord(e0, st));
    for (int i = 0; i < reps; i++) {
      FK(ctx, fagen_attention_forward(ctx, &f, st));
      FK(ctx, fagen_attention_backward(ctx, &b, st));
    }
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    if (r >= 0) CK(cudaEventElapsedTime(&ms[r], e0, e1));
  }
  qsort(ms, (size_t)rounds, sizeof ms[0], fg_cmp);
  printf("c_fwdbwd_ms %d %d %d %d %d %d %d %s %.4f\n", B, Sq, Sk, Hq, Hkv, D, causal,
         bf16 ? "bf16" : "fp16", ms[rounds / 2] / reps);
  fagen_ctx_destroy(ctx);
  return 0;
}
