/* fagen-bench: forward attention speed on the standard grid.
 *
 * The grid (DESIGN.md): B*S = 16384 tokens, hidden 2048 (head_dim 64: 32
 * heads, 128: 16, 256: 8), S from 512 to 16384, causal and not.  For each
 * cell: inputs drawn at random (two input sets, alternated, so that no run
 * finds its inputs in L2), the output checked against a float64 reference on
 * sampled rows, then the call timed with CUDA events: warm-up, then the median
 * of the repeats.  TFLOPS count 4*B*H*S^2*d, halved when causal.
 *
 *   fagen-bench [--head-dims 64,128,256] [--seqlens 512,...,16384]
 *               [--causal no|yes|both] [--fp16] [--reps N] [--warmup N]
 *               [--json FILE] [--variant NAME]... [--candidates] [--jobs N]
 *
 * --variant NAME runs that variant in the cells it fits (head_dim, dtype,
 * causal) instead of the selected one; several may be given.  --candidates
 * times every valid tile candidate of each cell (compiled first, in --jobs
 * threads) and marks the fastest: a manual autotune. */
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_ref.h"

#define CUDA_CHECK(call)                                                               \
  do {                                                                                 \
    cudaError_t e_ = (call);                                                           \
    if (e_ != cudaSuccess) {                                                           \
      fprintf(stderr, "fagen-bench: %s failed: %s\n", #call, cudaGetErrorString(e_)); \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

#define MAX_LIST 32
#define TOKENS 16384
#define HIDDEN 2048

typedef struct opts {
  int head_dims[MAX_LIST], n_head_dims;
  int seqlens[MAX_LIST], n_seqlens;
  int causal_modes[2], n_causal;
  fagen_dtype dtype;
  int reps, warmup, jobs, candidates;
  const char *json;
  fagen_variant forced[MAX_LIST];
  int n_forced;
} opts;

static int parse_list(const char *s, int *out, int cap) {
  int n = 0;
  while (*s && n < cap) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v <= 0) return -1;
    out[n++] = (int)v;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') return -1;
  }
  return n;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: fagen-bench [--head-dims 64,128,256] [--seqlens 512,1024,...,16384]\n"
          "                   [--causal no|yes|both] [--fp16] [--reps N] [--warmup N]\n"
          "                   [--json FILE] [--variant NAME]... [--candidates] [--jobs N]\n"
          "Times forward attention on the standard grid (B*S = 16384 tokens, hidden 2048)\n"
          "after checking each cell against a float64 reference on sampled rows.\n");
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* One cell's buffers: two input sets and an output. */
typedef struct cell {
  int B, S, H, D, causal;
  size_t n;
  uint16_t *host[2][3];
  void *dev[2][3];
  void *o;
} cell;

static void cell_alloc(cell *c, fagen_dtype dt, uint64_t *rng) {
  c->n = (size_t)c->B * c->S * c->H * c->D;
  uint16_t *tmp = malloc(c->n * 2);
  for (int set = 0; set < 2; set++)
    for (int t = 0; t < 3; t++) {
      float amp = t == 0 ? 2.0f : 1.0f; /* wider q: peaked softmax rows */
      for (size_t i = 0; i < c->n; i++) tmp[i] = fg_elem_from_float(dt, amp * fg_rand_uniform(rng));
      CUDA_CHECK(cudaMalloc(&c->dev[set][t], c->n * 2));
      CUDA_CHECK(cudaMemcpy(c->dev[set][t], tmp, c->n * 2, cudaMemcpyHostToDevice));
      c->host[set][t] = NULL;
      if (set == 0) { /* keep set 0 on the host for the reference */
        c->host[set][t] = malloc(c->n * 2);
        memcpy(c->host[set][t], tmp, c->n * 2);
      }
    }
  CUDA_CHECK(cudaMalloc(&c->o, c->n * 2));
  free(tmp);
}

static void cell_free(cell *c) {
  for (int set = 0; set < 2; set++)
    for (int t = 0; t < 3; t++) {
      cudaFree(c->dev[set][t]);
      free(c->host[set][t]);
    }
  cudaFree(c->o);
}

static void args_for(const cell *c, int set, fagen_dtype dt, fagen_attention_args *a) {
  fagen_attention_args_init(a);
  a->dtype = dt;
  a->batch = c->B;
  a->seqlen_q = a->seqlen_k = c->S;
  a->heads_q = a->heads_kv = c->H;
  a->head_dim = c->D;
  a->causal = c->causal;
  a->q = c->dev[set][0];
  a->k = c->dev[set][1];
  a->v = c->dev[set][2];
  a->o = c->o;
}

/* Relative error of sampled output rows against float64; -1 on a failure. */
static double check(fagen_ctx *ctx, const cell *c, fagen_dtype dt, const fagen_variant *v,
                    uint64_t *rng) {
  fagen_attention_args a;
  args_for(c, 0, dt, &a);
  a.variant = v;
  CUDA_CHECK(cudaMemset(c->o, 0xff, c->n * 2)); /* poison */
  if (fagen_attention_forward(ctx, &a, NULL) != FAGEN_OK) {
    fprintf(stderr, "fagen-bench: %s\n", fagen_errmsg(ctx));
    return -1;
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  const int rows = 12;
  uint16_t *row = malloc((size_t)c->D * 2);
  double *ref = malloc(sizeof(double) * (size_t)c->D);
  fagen_strides st = {(int64_t)c->S * c->H * c->D, (int64_t)c->H * c->D, c->D};
  fg_ref_args r = {dt,  c->B, c->S, c->S, c->H, c->H, c->D, c->causal, 1.0 / sqrt((double)c->D),
                   c->host[0][0], c->host[0][1], c->host[0][2], st, st, st};
  double num = 0, den = 0, lse;
  for (int k = 0; k < rows; k++) {
    int b = (int)(fabsf(fg_rand_uniform(rng)) * c->B) % c->B;
    int h = (int)(fabsf(fg_rand_uniform(rng)) * c->H) % c->H;
    int i = k == 0 ? 0 : k == 1 ? c->S - 1 : (int)(fabsf(fg_rand_uniform(rng)) * c->S) % c->S;
    CUDA_CHECK(cudaMemcpy(row, (uint16_t *)c->o + (((size_t)b * c->S + i) * c->H + h) * c->D,
                          (size_t)c->D * 2, cudaMemcpyDeviceToHost));
    fg_ref_row(&r, b, h, i, ref, &lse);
    for (int d = 0; d < c->D; d++) {
      double got = fg_elem_to_float(dt, row[d]);
      if (isnan(got)) {
        free(row), free(ref);
        return INFINITY;
      }
      num += (got - ref[d]) * (got - ref[d]);
      den += ref[d] * ref[d];
    }
  }
  free(row), free(ref);
  return sqrt(num / den);
}

/* Median milliseconds of one call. */
static double time_ms(fagen_ctx *ctx, const cell *c, fagen_dtype dt, const fagen_variant *v,
                      int warmup, int reps) {
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  float *ms = malloc(sizeof(float) * (size_t)reps);
  fagen_attention_args a[2];
  args_for(c, 0, dt, &a[0]);
  args_for(c, 1, dt, &a[1]);
  a[0].variant = a[1].variant = v;
  for (int it = -warmup; it < reps; it++) {
    const fagen_attention_args *cur = &a[(it + warmup) & 1];
    CUDA_CHECK(cudaEventRecord(e0, 0));
    if (fagen_attention_forward(ctx, cur, NULL) != FAGEN_OK) {
      fprintf(stderr, "fagen-bench: %s\n", fagen_errmsg(ctx));
      exit(1);
    }
    CUDA_CHECK(cudaEventRecord(e1, 0));
    CUDA_CHECK(cudaEventSynchronize(e1));
    if (it >= 0) CUDA_CHECK(cudaEventElapsedTime(&ms[it], e0, e1));
  }
  qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
  double med = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
  free(ms);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return med;
}

/* Parallel precompile of candidate lists. */
typedef struct compile_job {
  fagen_ctx *ctx;
  const fagen_variant *vs;
  size_t n, next;
  pthread_mutex_t mu;
} compile_job;

static void *compile_worker(void *arg) {
  compile_job *j = arg;
  for (;;) {
    pthread_mutex_lock(&j->mu);
    size_t i = j->next++;
    pthread_mutex_unlock(&j->mu);
    if (i >= j->n) return NULL;
    fagen_compile(j->ctx, &j->vs[i], NULL);
  }
}

static void precompile(fagen_ctx *ctx, const fagen_variant *vs, size_t n, int jobs) {
  compile_job j = {ctx, vs, n, 0, PTHREAD_MUTEX_INITIALIZER};
  pthread_t th[64];
  if (jobs > 64) jobs = 64;
  for (int t = 0; t < jobs; t++) pthread_create(&th[t], NULL, compile_worker, &j);
  for (int t = 0; t < jobs; t++) pthread_join(th[t], NULL);
}

int main(int argc, char **argv) {
  opts o;
  memset(&o, 0, sizeof o);
  int dflt_d[] = {64, 128, 256}, dflt_s[] = {512, 1024, 2048, 4096, 8192, 16384};
  memcpy(o.head_dims, dflt_d, sizeof dflt_d);
  o.n_head_dims = 3;
  memcpy(o.seqlens, dflt_s, sizeof dflt_s);
  o.n_seqlens = 6;
  o.causal_modes[0] = 0, o.causal_modes[1] = 1, o.n_causal = 2;
  o.dtype = FAGEN_DTYPE_BF16;
  o.reps = 20, o.warmup = 3, o.jobs = 8;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--head-dims") && next) {
      if ((o.n_head_dims = parse_list(next, o.head_dims, MAX_LIST)) <= 0) goto bad;
      i++;
    } else if (!strcmp(a, "--seqlens") && next) {
      if ((o.n_seqlens = parse_list(next, o.seqlens, MAX_LIST)) <= 0) goto bad;
      i++;
    } else if (!strcmp(a, "--causal") && next) {
      if (!strcmp(next, "no")) o.causal_modes[0] = 0, o.n_causal = 1;
      else if (!strcmp(next, "yes")) o.causal_modes[0] = 1, o.n_causal = 1;
      else if (strcmp(next, "both") != 0) goto bad;
      i++;
    } else if (!strcmp(a, "--fp16")) {
      o.dtype = FAGEN_DTYPE_FP16;
    } else if (!strcmp(a, "--reps") && next) {
      o.reps = atoi(next), i++;
      if (o.reps < 1 || o.reps > 10000) goto bad;
    } else if (!strcmp(a, "--warmup") && next) {
      o.warmup = atoi(next), i++;
      if (o.warmup < 0 || o.warmup > 1000) goto bad;
    } else if (!strcmp(a, "--jobs") && next) {
      o.jobs = atoi(next), i++;
      if (o.jobs < 1) goto bad;
    } else if (!strcmp(a, "--json") && next) {
      o.json = next, i++;
    } else if (!strcmp(a, "--candidates")) {
      o.candidates = 1;
    } else if (!strcmp(a, "--variant") && next) {
      if (o.n_forced == MAX_LIST || fagen_variant_parse(next, &o.forced[o.n_forced]) != FAGEN_OK) {
        fprintf(stderr, "fagen-bench: %s\n", fagen_last_error());
        return 2;
      }
      o.n_forced++, i++;
    } else {
      goto bad;
    }
  }
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("fagen-bench: no GPU here; nothing to time.\n");
    return 0;
  }
  struct cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  fagen_ctx *ctx;
  if (fagen_ctx_create(&ctx) != FAGEN_OK) return 1;
  FILE *json = o.json ? fopen(o.json, "w") : NULL;
  if (o.json && !json) {
    perror(o.json);
    return 1;
  }
  if (json)
    fprintf(json, "{\"device\": \"%s\", \"dtype\": \"%s\", \"reps\": %d, \"cells\": [\n", prop.name,
            o.dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", o.reps);
  printf("fagen-bench on %s, %s, median of %d after %d warm-up\n", prop.name,
         o.dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", o.reps, o.warmup);
  printf("| d | S | causal | B | H | variant | err | ms | TFLOPS |\n|---|---|---|---|---|---|---|---|---|\n");
  uint64_t seed = fg_rand_seed(), rng = seed;
  int first_json = 1, failures = 0;
  for (int di = 0; di < o.n_head_dims; di++)
    for (int si = 0; si < o.n_seqlens; si++)
      for (int ci = 0; ci < o.n_causal; ci++) {
        cell c;
        memset(&c, 0, sizeof c);
        c.D = o.head_dims[di];
        c.S = o.seqlens[si];
        c.causal = o.causal_modes[ci];
        c.H = HIDDEN / c.D;
        c.B = TOKENS / c.S > 0 ? TOKENS / c.S : 1;
        /* The variants to time in this cell. */
        fagen_variant runs[64];
        int nr = 0;
        fagen_attention_args probe;
        args_for(&c, 0, o.dtype, &probe);
        fagen_variant sel;
        if (fagen_attention_select(ctx, &probe, NULL, &sel) != FAGEN_OK) {
          fprintf(stderr, "fagen-bench: %s\n", fagen_errmsg(ctx));
          return 1;
        }
        for (int f = 0; f < o.n_forced; f++)
          if (o.forced[f].head_dim >= c.D && o.forced[f].dtype == o.dtype &&
              o.forced[f].causal == c.causal && o.forced[f].target.arch == sel.target.arch)
            runs[nr++] = o.forced[f];
        if (o.candidates) {
          fagen_variant cand[64];
          size_t nc = 0;
          fagen_variant_candidates(&sel, cand, 64, &nc);
          for (size_t k = 0; k < nc && nr < 64; k++)
            if (fagen_variant_validate(&cand[k], NULL, 0) == FAGEN_OK) runs[nr++] = cand[k];
          precompile(ctx, runs, (size_t)nr, o.jobs);
        }
        if (nr == 0) runs[nr++] = sel;
        cell_alloc(&c, o.dtype, &rng);
        double flops = 4.0 * c.B * c.H * (double)c.S * c.S * c.D * (c.causal ? 0.5 : 1.0);
        double best = 0;
        int best_k = -1;
        double tf[64], errs[64], mss[64];
        for (int k = 0; k < nr; k++) {
          errs[k] = check(ctx, &c, o.dtype, &runs[k], &rng);
          double tol = o.dtype == FAGEN_DTYPE_BF16 ? 1e-2 : 2e-3;
          if (errs[k] < 0 || !(errs[k] < tol)) {
            failures++;
            tf[k] = 0, mss[k] = 0;
            continue; /* a wrong kernel is never timed */
          }
          mss[k] = time_ms(ctx, &c, o.dtype, &runs[k], o.warmup, o.reps);
          tf[k] = flops / mss[k] * 1e-9;
          if (tf[k] > best) best = tf[k], best_k = k;
        }
        for (int k = 0; k < nr; k++) {
          char name[FAGEN_VARIANT_NAME_MAX];
          fagen_variant_name(&runs[k], name, sizeof name);
          int is_sel = memcmp(&runs[k], &sel, sizeof sel) == 0;
          printf("| %d | %d | %s | %d | %d | %s%s%s | %.1e | %.3f | %.1f |\n", c.D, c.S,
                 c.causal ? "yes" : "no", c.B, c.H, name, is_sel ? " (default)" : "",
                 nr > 1 && k == best_k ? " **best**" : "", errs[k], mss[k], tf[k]);
          if (json) {
            fprintf(json,
                    "%s  {\"head_dim\": %d, \"seqlen\": %d, \"causal\": %s, \"batch\": %d, "
                    "\"heads\": %d, \"variant\": \"%s\", \"default\": %s, \"rel_err\": %.3e, "
                    "\"ms\": %.5f, \"tflops\": %.2f}",
                    first_json ? "" : ",\n", c.D, c.S, c.causal ? "true" : "false", c.B, c.H, name,
                    is_sel ? "true" : "false", errs[k], mss[k], tf[k]);
            first_json = 0;
          }
        }
        fflush(stdout);
        cell_free(&c);
      }
  if (json) {
    fprintf(json, "\n], \"seed\": %llu}\n", (unsigned long long)seed);
    fclose(json);
  }
  fagen_ctx_destroy(ctx);
  if (failures) fprintf(stderr, "fagen-bench: %d runs failed the correctness check\n", failures);
  return failures ? 1 : 0;
bad:
  usage(stderr);
  return 2;
}
