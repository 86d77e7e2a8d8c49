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
 *               [--vs-heuristic]
 *
 * --variant NAME runs that variant in the cells it fits (head_dim, dtype,
 * causal) instead of the selected one; several may be given.  --candidates
 * times every valid tile candidate of each cell (compiled first, in --jobs
 * threads) and marks the fastest.  --vs-heuristic times the selected variant
 * (tuning tables included) against the heuristic's in each cell, the two
 * interleaved, and prints their ratio and its geometric mean. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_ref.h"
#include "fg_timing.h"
#include "fg_tool_util.h"

#define MAX_LIST 32
#define MAX_RUNS 64

typedef struct opts {
  int head_dims[MAX_LIST], n_head_dims;
  int seqlens[MAX_LIST], n_seqlens;
  int causal_modes[2], n_causal;
  fagen_dtype dtype;
  int reps, warmup, jobs, candidates, vs_heuristic;
  const char *json;
  fagen_variant forced[MAX_LIST];
  int n_forced;
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: fagen-bench [--head-dims 64,128,256] [--seqlens 512,1024,...,16384]\n"
          "                   [--causal no|yes|both] [--fp16] [--reps N] [--warmup N]\n"
          "                   [--json FILE] [--variant NAME]... [--candidates] [--jobs N]\n"
          "                   [--vs-heuristic]\n"
          "Times forward attention on the standard grid (B*S = 16384 tokens, hidden 2048)\n"
          "after checking each cell against a float64 reference on sampled rows.\n");
}

/* Relative error of sampled output rows against float64; INFINITY for NaN,
 * -1 when the call fails. */
static double check(fagen_ctx *ctx, const fg_cell *c, const fagen_variant *v, uint64_t *rng) {
  char err[1024];
  uint16_t *o = malloc(c->nq * 2);
  if (fg_cell_run(ctx, c, v, o, err, sizeof err) != 0) {
    fprintf(stderr, "fagen-bench: %s\n", err);
    free(o);
    return -1;
  }
  fagen_strides st = {(int64_t)c->Sq * c->Hq * c->D, (int64_t)c->Hq * c->D, c->D};
  fg_ref_args r = {c->dtype, c->B, c->Sq, c->Sk, c->Hq, c->Hkv, c->D, c->causal,
                   1.0 / sqrt((double)c->D), c->host[0], c->host[1], c->host[2], st, st, st,
                   NULL};
  double *ref = malloc(sizeof(double) * (size_t)c->D);
  double num = 0, den = 0, lse;
  for (int k = 0; k < 12; k++) {
    int b = (int)(fabsf(fg_rand_uniform(rng)) * c->B) % c->B;
    int h = (int)(fabsf(fg_rand_uniform(rng)) * c->Hq) % c->Hq;
    int i = k == 0 ? 0 : k == 1 ? c->Sq - 1 : (int)(fabsf(fg_rand_uniform(rng)) * c->Sq) % c->Sq;
    fg_ref_row(&r, b, h, i, ref, &lse);
    const uint16_t *row = o + (((size_t)b * c->Sq + i) * c->Hq + h) * c->D;
    for (int d = 0; d < c->D; d++) {
      double got = fg_elem_to_float(c->dtype, row[d]);
      if (isnan(got)) num = INFINITY;
      num += (got - ref[d]) * (got - ref[d]);
      den += ref[d] * ref[d];
    }
  }
  free(ref);
  free(o);
  return sqrt(num / den);
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
      if ((o.n_head_dims = fg_parse_int_list(next, o.head_dims, MAX_LIST)) <= 0) goto bad;
      i++;
    } else if (!strcmp(a, "--seqlens") && next) {
      if ((o.n_seqlens = fg_parse_int_list(next, o.seqlens, MAX_LIST)) <= 0) goto bad;
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
    } else if (!strcmp(a, "--vs-heuristic")) {
      o.vs_heuristic = 1;
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
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 1;
  fagen_ctx *ctx;
  if (fagen_ctx_create(&ctx) != FAGEN_OK) return 1;
  fagen_device_class dc, anonymous;
  if (fagen_device_class_current(ctx, &dc) != FAGEN_OK) {
    fprintf(stderr, "fagen-bench: %s\n", fagen_errmsg(ctx));
    return 1;
  }
  anonymous = dc;
  anonymous.name[0] = '\0'; /* matches no table: the heuristic */
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
  if (o.vs_heuristic)
    printf("| d | S | causal | selected (source) | TFLOPS | heuristic | TFLOPS | ratio |\n"
           "|---|---|---|---|---|---|---|---|\n");
  else
    printf("| d | S | causal | B | H | variant | err | ms | TFLOPS |\n"
           "|---|---|---|---|---|---|---|---|---|\n");
  uint64_t seed = fg_rand_seed(), rng = seed;
  int first_json = 1, failures = 0, n_ratio = 0;
  double log_ratio = 0;
  static const char *const sources[] = {"forced", "user table", "shipped table", "heuristic"};
  for (int di = 0; di < o.n_head_dims; di++)
    for (int si = 0; si < o.n_seqlens; si++)
      for (int ci = 0; ci < o.n_causal; ci++) {
        fg_cell c;
        fg_cell_standard(&c, o.dtype, o.head_dims[di], o.seqlens[si], o.causal_modes[ci]);
        fagen_variant runs[MAX_RUNS], sel, heur;
        fagen_select_info info;
        int nr = 0;
        fagen_attention_args probe;
        fg_cell_args(&c, 0, NULL, &probe);
        if (fagen_attention_select(ctx, &probe, NULL, &sel, &info) != FAGEN_OK ||
            fagen_attention_select(ctx, &probe, &anonymous, &heur, NULL) != FAGEN_OK) {
          fprintf(stderr, "fagen-bench: %s\n", fagen_errmsg(ctx));
          return 1;
        }
        if (o.vs_heuristic) {
          runs[nr++] = sel;
          runs[nr++] = heur;
        }
        for (int f = 0; f < o.n_forced && nr < MAX_RUNS; f++)
          if (o.forced[f].head_dim >= c.D && o.forced[f].dtype == o.dtype &&
              o.forced[f].causal == c.causal && o.forced[f].target.arch == sel.target.arch)
            runs[nr++] = o.forced[f];
        if (o.candidates) {
          fagen_variant cand[MAX_RUNS];
          size_t nc = 0;
          fagen_variant_candidates(&sel, cand, MAX_RUNS, &nc);
          for (size_t k = 0; k < nc && nr < MAX_RUNS; k++)
            if (fagen_variant_validate(&cand[k], NULL, 0) == FAGEN_OK) runs[nr++] = cand[k];
        }
        if (nr == 0) runs[nr++] = sel;
        fg_compile_all(ctx, runs, (size_t)nr, o.jobs, NULL, NULL);
        char err[1024];
        if (fg_cell_alloc(&c, &rng, 1, err, sizeof err) != 0) {
          fprintf(stderr, "fagen-bench: %s\n", err);
          return 1;
        }
        double flops = fg_cell_flops(&c), tol = o.dtype == FAGEN_DTYPE_BF16 ? 1e-2 : 2e-3;
        double tf[MAX_RUNS], errs[MAX_RUNS], mss[MAX_RUNS], best = 0;
        int best_k = -1;
        for (int k = 0; k < nr; k++) {
          tf[k] = mss[k] = 0;
          errs[k] = check(ctx, &c, &runs[k], &rng);
          if (errs[k] < 0 || !(errs[k] < tol)) {
            failures++;
            continue; /* a wrong kernel is never timed */
          }
        }
        /* --vs-heuristic: the two interleaved, twice each, best median kept */
        int rounds = o.vs_heuristic ? 2 : 1;
        for (int r = 0; r < rounds; r++)
          for (int k = 0; k < nr; k++) {
            if (errs[k] < 0 || !(errs[k] < tol)) continue;
            double ms = fg_cell_time_ms(ctx, &c, &runs[k], o.warmup, o.reps, err, sizeof err);
            if (ms < 0) {
              fprintf(stderr, "fagen-bench: %s\n", err);
              return 1;
            }
            if (r == 0 || ms < mss[k]) mss[k] = ms;
            tf[k] = flops / mss[k] * 1e-9;
          }
        for (int k = 0; k < nr; k++)
          if (tf[k] > best) best = tf[k], best_k = k;
        if (o.vs_heuristic) {
          char a[FAGEN_VARIANT_NAME_MAX], b[FAGEN_VARIANT_NAME_MAX];
          fagen_variant_name(&runs[0], a, sizeof a);
          fagen_variant_name(&runs[1], b, sizeof b);
          double ratio = tf[1] > 0 ? tf[0] / tf[1] : 0;
          if (ratio > 0) log_ratio += log(ratio), n_ratio++;
          printf("| %d | %d | %s | %s (%s) | %.1f | %s | %.1f | %.3f |\n", c.D, c.Sq,
                 c.causal ? "yes" : "no", a, sources[info.source], tf[0],
                 fg_variant_name_cmp(&runs[0], &runs[1]) == 0 ? "(same)" : b, tf[1], ratio);
        } else {
          for (int k = 0; k < nr; k++) {
            char name[FAGEN_VARIANT_NAME_MAX];
            fagen_variant_name(&runs[k], name, sizeof name);
            printf("| %d | %d | %s | %d | %d | %s%s%s | %.1e | %.3f | %.1f |\n", c.D, c.Sq,
                   c.causal ? "yes" : "no", c.B, c.Hq, name,
                   fg_variant_name_cmp(&runs[k], &sel) == 0 ? " (default)" : "",
                   nr > 1 && k == best_k ? " **best**" : "", errs[k], mss[k], tf[k]);
          }
        }
        for (int k = 0; json && k < nr; k++) {
          char name[FAGEN_VARIANT_NAME_MAX];
          fagen_variant_name(&runs[k], name, sizeof name);
          fprintf(json,
                  "%s  {\"head_dim\": %d, \"seqlen\": %d, \"causal\": %s, \"batch\": %d, "
                  "\"heads\": %d, \"variant\": \"%s\", \"default\": %s, \"rel_err\": %.3e, "
                  "\"ms\": %.5f, \"tflops\": %.2f}",
                  first_json ? "" : ",\n", c.D, c.Sq, c.causal ? "true" : "false", c.B, c.Hq,
                  name, fg_variant_name_cmp(&runs[k], &sel) == 0 && (!o.vs_heuristic || k == 0) ? "true" : "false",
                  errs[k], mss[k], tf[k]);
          first_json = 0;
        }
        fflush(stdout);
        fg_cell_free(&c);
      }
  if (o.vs_heuristic && n_ratio)
    printf("\ngeometric mean of selected / heuristic over %d cells: %.3f\n", n_ratio,
           exp(log_ratio / n_ratio));
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
