#define _POSIX_C_SOURCE 200809L
#include "fg_timing.h"

#include <cuda_runtime.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fg_ref.h"

#define FG_CU(call)                                                                   \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      snprintf(err, errsize, "%s failed: %s", #call, cudaGetErrorString(e_));          \
      return -1;                                                                      \
    }                                                                                 \
  } while (0)

void fg_cell_standard(fg_cell *c, fagen_dtype dtype, int head_dim, int seqlen, int causal) {
  memset(c, 0, sizeof *c);
  c->dtype = dtype;
  c->D = head_dim;
  c->Sq = c->Sk = seqlen;
  c->Hq = c->Hkv = 2048 / head_dim > 0 ? 2048 / head_dim : 1;
  c->B = 16384 / seqlen > 0 ? 16384 / seqlen : 1;
  c->causal = causal;
}

int fg_cell_alloc(fg_cell *c, uint64_t *rng, int keep_host, char *err, size_t errsize) {
  c->nq = (size_t)c->B * c->Sq * c->Hq * c->D;
  c->nk = (size_t)c->B * c->Sk * c->Hkv * c->D;
  size_t nmax = c->nq > c->nk ? c->nq : c->nk;
  uint16_t *tmp = malloc(nmax * 2);
  if (!tmp) {
    snprintf(err, errsize, "out of host memory");
    return -1;
  }
  for (int set = 0; set < 2; set++)
    for (int t = 0; t < 3; t++) {
      size_t n = t == 0 ? c->nq : c->nk;
      float amp = t == 0 ? 2.0f : 1.0f;
      for (size_t i = 0; i < n; i++) tmp[i] = fg_elem_from_float(c->dtype, amp * fg_rand_uniform(rng));
      cudaError_t e = cudaMalloc(&c->dev[set][t], n * 2);
      if (e == cudaSuccess) e = cudaMemcpy(c->dev[set][t], tmp, n * 2, cudaMemcpyHostToDevice);
      if (e != cudaSuccess) {
        snprintf(err, errsize, "device memory: %s", cudaGetErrorString(e));
        free(tmp);
        return -1;
      }
      if (set == 0 && keep_host) {
        c->host[t] = malloc(n * 2);
        if (c->host[t]) memcpy(c->host[t], tmp, n * 2);
      }
    }
  free(tmp);
  FG_CU(cudaMalloc(&c->o, c->nq * 2));
  return 0;
}

int fg_buffers_alloc(fg_buffers *b, fagen_dtype dtype, size_t n, uint64_t *rng, char *err,
                     size_t errsize) {
  memset(b, 0, sizeof *b);
  b->dtype = dtype;
  b->n = n;
  uint16_t *tmp = malloc(n * 2);
  if (!tmp) {
    snprintf(err, errsize, "out of host memory");
    return -1;
  }
  for (int set = 0; set < 2; set++)
    for (int t = 0; t < 3; t++) {
      float amp = t == 0 ? 2.0f : 1.0f;
      for (size_t i = 0; i < n; i++) tmp[i] = fg_elem_from_float(dtype, amp * fg_rand_uniform(rng));
      cudaError_t e = cudaMalloc(&b->dev[set][t], n * 2);
      if (e == cudaSuccess) e = cudaMemcpy(b->dev[set][t], tmp, n * 2, cudaMemcpyHostToDevice);
      if (e != cudaSuccess) {
        snprintf(err, errsize, "device memory: %s", cudaGetErrorString(e));
        free(tmp);
        return -1;
      }
    }
  free(tmp);
  FG_CU(cudaMalloc(&b->o, n * 2));
  return 0;
}

void fg_buffers_free(fg_buffers *b) {
  for (int set = 0; set < 2; set++)
    for (int t = 0; t < 3; t++) cudaFree(b->dev[set][t]);
  cudaFree(b->o);
  memset(b, 0, sizeof *b);
}

int fg_cell_use(fg_cell *c, const fg_buffers *b) {
  c->nq = (size_t)c->B * c->Sq * c->Hq * c->D;
  c->nk = (size_t)c->B * c->Sk * c->Hkv * c->D;
  if (c->dtype != b->dtype || c->nq > b->n || c->nk > b->n) return -1;
  memcpy(c->dev, b->dev, sizeof c->dev);
  c->o = b->o;
  memset(c->host, 0, sizeof c->host);
  return 0;
}

void fg_cell_free(fg_cell *c) {
  for (int set = 0; set < 2; set++)
    for (int t = 0; t < 3; t++) cudaFree(c->dev[set][t]);
  for (int t = 0; t < 3; t++) free(c->host[t]);
  cudaFree(c->o);
  memset(c->dev, 0, sizeof c->dev);
  memset(c->host, 0, sizeof c->host);
  c->o = NULL;
}

void fg_cell_args(const fg_cell *c, int set, const fagen_variant *variant, fagen_attention_args *a) {
  fagen_attention_args_init(a);
  a->dtype = c->dtype;
  a->batch = c->B;
  a->seqlen_q = c->Sq;
  a->seqlen_k = c->Sk;
  a->heads_q = c->Hq;
  a->heads_kv = c->Hkv;
  a->head_dim = c->D;
  a->causal = c->causal;
  a->q = c->dev[set][0];
  a->k = c->dev[set][1];
  a->v = c->dev[set][2];
  a->o = c->o;
  a->variant = variant;
}

static int fg_cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

double fg_median_ms(float *v, int n) {
  qsort(v, (size_t)n, sizeof *v, fg_cmp_float);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The host gate (see fg_time_many).  It gives up after FG_GATE_SECONDS (a
 * host stalled that long would otherwise hold the GPU), and says so. */
#define FG_GATE_SECONDS 10.0
typedef struct fg_gate {
  atomic_int open, gave_up;
} fg_gate;

static double fg_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fg_gate_wait(void *user) {
  fg_gate *g = user;
  const double t0 = fg_now();
  while (!atomic_load(&g->open))
    if (fg_now() - t0 > FG_GATE_SECONDS) {
      atomic_store(&g->gave_up, 1);
      return;
    }
}

/* One gated measurement of item k on input set `set` into *ms (or none). */
static int fg_time_once(fg_launch_fn *launch, void *user, int k, int set, cudaEvent_t e0,
                        cudaEvent_t e1, float *ms, char *err, size_t errsize) {
  fg_gate gate;
  atomic_init(&gate.open, 0);
  atomic_init(&gate.gave_up, 0);
  cudaError_t ce = cudaLaunchHostFunc(0, fg_gate_wait, &gate);
  if (ce == cudaSuccess) ce = cudaEventRecord(e0, 0);
  int rc = ce == cudaSuccess ? launch(user, k, set, err, errsize) : 0;
  if (ce == cudaSuccess && rc == 0) ce = cudaEventRecord(e1, 0);
  atomic_store(&gate.open, 1); /* on every path: the gate must not outlive this frame */
  cudaError_t se = cudaStreamSynchronize(0);
  if (rc != 0) return -1;
  FG_CU(ce);
  if (se != cudaSuccess) {
    snprintf(err, errsize, "kernel failed: %s", cudaGetErrorString(se));
    return -1;
  }
  if (atomic_load(&gate.gave_up)) {
    snprintf(err, errsize, "the host took over %.0f s to queue one call", FG_GATE_SECONDS);
    return -1;
  }
  if (ms) FG_CU(cudaEventElapsedTime(ms, e0, e1));
  return 0;
}

int fg_time_many(int n, int warmup, int reps, fg_launch_fn *launch, void *user, double *ms,
                 char *err, size_t errsize) {
  if (n < 0 || reps < 1 || warmup < 0) {
    snprintf(err, errsize, "fg_time_many: %d items, %d reps, %d warm-up", n, reps, warmup);
    return -1;
  }
  if (n == 0) return 0; /* nothing to time (every variant of a cell failed its check) */
  cudaEvent_t e0, e1;
  if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
    snprintf(err, errsize, "cudaEventCreate failed");
    return -1;
  }
  float *t = malloc(sizeof(float) * (size_t)reps * (size_t)n);
  int rc = t ? 0 : -1;
  if (!t) snprintf(err, errsize, "out of memory");
  for (int it = -warmup; rc == 0 && it < reps; it++)
    for (int i = 0; rc == 0 && i < n; i++) {
      const int k = (i + it + warmup) % n;
      rc = fg_time_once(launch, user, k, (it + warmup) & 1, e0, e1,
                        it >= 0 ? &t[(size_t)k * reps + it] : NULL, err, errsize);
    }
  for (int k = 0; rc == 0 && k < n; k++) ms[k] = fg_median_ms(t + (size_t)k * reps, reps);
  free(t);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return rc;
}

typedef struct fg_cell_batch {
  fagen_ctx *ctx;
  const fg_cell *c;
  const fagen_variant *const *variants;
} fg_cell_batch;

static int fg_cell_launch_one(void *user, int k, int set, char *err, size_t errsize) {
  const fg_cell_batch *l = user;
  fagen_attention_args a;
  fg_cell_args(l->c, set, l->variants[k], &a);
  if (fagen_attention_forward(l->ctx, &a, NULL) != FAGEN_OK) {
    snprintf(err, errsize, "%s", fagen_errmsg(l->ctx));
    return -1;
  }
  return 0;
}

int fg_cell_time_many(fagen_ctx *ctx, const fg_cell *c, const fagen_variant *const *variants, int n,
                      int warmup, int reps, double *ms, char *err, size_t errsize) {
  fg_cell_batch l = {ctx, c, variants};
  return fg_time_many(n, warmup, reps, fg_cell_launch_one, &l, ms, err, errsize);
}

int fg_cell_run(fagen_ctx *ctx, const fg_cell *c, const fagen_variant *variant, uint16_t *o_host,
                char *err, size_t errsize) {
  fagen_attention_args a;
  fg_cell_args(c, 0, variant, &a);
  FG_CU(cudaMemset(c->o, 0xff, c->nq * 2)); /* poison: NaN in fp16 and bf16 */
  if (fagen_attention_forward(ctx, &a, NULL) != FAGEN_OK) {
    snprintf(err, errsize, "%s", fagen_errmsg(ctx));
    return -1;
  }
  FG_CU(cudaDeviceSynchronize());
  FG_CU(cudaMemcpy(o_host, c->o, c->nq * 2, cudaMemcpyDeviceToHost));
  return 0;
}

double fg_cell_flops(const fg_cell *c) {
  double f = 4.0 * c->B * c->Hq * (double)c->Sq * c->Sk * c->D;
  return c->causal && c->Sq == c->Sk ? f / 2 : f;
}
