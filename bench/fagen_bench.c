/* fagen-bench: attention speed on the standard grid — forward, backward, or
 * forward + backward, with or without the masks and score features.
 *
 * The grid (DESIGN.md): B*S = 16384 tokens, hidden 2048 (head_dim 64: 32
 * heads, 128: 16, 256: 8; B at least 1, so S = 32768 is one sequence of
 * 32768), S from 512 to 16384, causal and not.  For each cell: inputs drawn
 * at random once per run (two input sets, alternated, so that no call finds
 * its inputs in L2), the timed work checked against the float64 reference,
 * then timed with CUDA events: warm-up, then the median of the repeats.  A
 * host gate holds the stream until each call's launches are queued, so times
 * are GPU time only.
 *
 *   fagen-bench [--mode fwd|bwd|fwdbwd] [--deterministic]
 *               [--head-dims 64,128,256] [--seqlens 512,...,16384]
 *               [--causal no|yes|both] [--fp16] [--reps N] [--warmup N]
 *               [--window L,R] [--softcap C] [--alibi] [--dropout P]
 *               [--varlen mixed|equal|classes]
 *               [--seqused] [--json FILE] [--variant NAME]... [--candidates]
 *               [--jobs N] [--vs-heuristic]
 *
 * A cell with features is timed against its base, the same cell without
 * them (--varlen mixed: the same tokens as equal-length sequences; --varlen
 * classes: the same sequences as separate equal-length batches), the two
 * interleaved; a causal cell without features against the non-causal cell of
 * the same run.  usage() below documents every option. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_bench_case.h"
#include "fg_ref.h"
#include "fg_timing.h"
#include "fg_tool_util.h"

#define MAX_LIST 32
#define MAX_RUNS 256 /* variants timed in one cell (--candidates: both forward families) */

typedef struct opts {
  fg_mode mode;
  int deterministic;
  int head_dims[MAX_LIST], n_head_dims;
  int seqlens[MAX_LIST], n_seqlens;
  int causal_modes[2], n_causal;
  fagen_dtype dtype;
  int reps, warmup, jobs, candidates, vs_heuristic;
  fg_feature_opts fo;
  const char *json;
  fagen_variant forced[MAX_LIST];
  int n_forced;
} opts;

static const char *const mode_names[] = {"fwd", "bwd", "fwdbwd"};

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: fagen-bench [--mode fwd|bwd|fwdbwd] [--deterministic]\n"
      "                   [--head-dims 64,128,256] [--seqlens 512,1024,...,16384]\n"
      "                   [--causal no|yes|both] [--fp16] [--reps N] [--warmup N]\n"
      "                   [--window L,R] [--softcap C] [--alibi] [--dropout P]\n"
      "                   [--varlen mixed|equal|classes] [--seqused] [--json FILE]\n"
      "                   [--variant NAME]... [--candidates] [--jobs N]\n"
      "                   [--vs-heuristic]\n"
      "Times attention on the standard grid: B*S = 16384 tokens (B >= 1), hidden 2048\n"
      "(d64: 32 heads, d128: 16, d256: 8), bf16, layout [B, S, H, D].  Each cell is\n"
      "checked against a float64 reference first; a cell that fails is not timed and\n"
      "the exit status is 1.  Times: CUDA events around one call, median of --reps\n"
      "after --warmup calls, two input sets alternated; a host gate holds the stream\n"
      "until the call's launches are queued, so host work (validation, launch) is\n"
      "not counted.  Several variants in a cell (--vs-heuristic, --variant,\n"
      "--candidates, a baseline) are timed call by call in turn, so that clock\n"
      "changes as the GPU heats hit them alike.\n"
      "\n"
      "  --mode fwd       the forward (default; no LSE written, as in inference)\n"
      "  --mode bwd       fagen_attention_backward alone: O and LSE computed once by\n"
      "                   the forward beforehand, workspace allocated once outside\n"
      "                   the timed calls\n"
      "  --mode fwdbwd    the forward (with LSE) then the backward\n"
      "  --deterministic  the deterministic backward (bwd modes)\n"
      "  --head-dims L    head dims (default 64,128,256)\n"
      "  --seqlens L      sequence lengths S (default 512,1024,2048,4096,8192,16384)\n"
      "  --causal M       no, yes or both (default both)\n"
      "  --fp16           fp16 instead of bf16\n"
      "  --reps N         timed calls per measurement (default 20)\n"
      "  --warmup N       untimed calls first (default 3)\n"
      "  --window L,R     sliding window: query i sees keys i-L..i+R (-1: unbounded;\n"
      "                   with causal the right extent is 0)\n"
      "  --softcap C      logit softcapping: scores C * tanh(s / C), C > 0\n"
      "  --alibi          ALiBi, slope 2^(-8 (h+1) / H) for head h of H\n"
      "  --dropout P      dropout on the probabilities, rate P in (0, 1), fixed seed\n"
      "  --varlen mixed   packed sequences (cu_seqlens): the cell's B*S tokens split\n"
      "                   into sequences of S/8..S tokens drawn from a seed fixed per\n"
      "                   S (the last takes the rest); S is the longest\n"
      "  --varlen equal   the same tokens as B packed sequences of S tokens\n"
      "  --varlen classes packed sequences of S, S/2, S/4 and S/8 tokens taken in turn\n"
      "                   (skipping those longer than the tokens left) until the B*S\n"
      "                   tokens are used, in an order shuffled with a seed fixed per\n"
      "                   S; they mix where B >= 2 (S <= 8192 on the grid)\n"
      "  --seqused        padded batch: B sequences of S rows, valid lengths (seqused_q\n"
      "                   = seqused_k) drawn from S/8..S with a fixed seed\n"
      "  --json FILE      also write every row as JSON\n"
      "  --variant NAME   time this variant where it fits (op, head_dim, dtype,\n"
      "                   causal, features); several may be given\n"
      "  --candidates     time every valid tile candidate of each cell (compiled first\n"
      "                   in --jobs threads, default 8) and mark the fastest\n"
      "  --vs-heuristic   the selected variant (tuning tables included) against the\n"
      "                   heuristic's, interleaved; their ratio and geometric mean\n"
      "In the bwd modes --variant, --candidates and --vs-heuristic concern the\n"
      "backward variant (the forward of fwdbwd runs its selected variant) and the\n"
      "variant column names it; on sm_90a the non-deterministic cells take both\n"
      "backward families (bwd and, without features, bwdwg) and --candidates\n"
      "times the candidates of both.\n"
      "\n"
      "Checks: the forward's sampled output rows against the reference (first and last\n"
      "row of a sequence and random ones); the backward: the full-size call must write\n"
      "every gradient (poisoned with NaN first), and a reduced copy of the cell (2\n"
      "sequences, 2 heads, S at most 512, window extents scaled by S'/S, the same\n"
      "features) run with the same backward variant must match the reference's dQ,\n"
      "dK and dV.  err: the largest relative error; limit 1e-2 in bf16; in fp16 2e-3\n"
      "(--mode fwd) or 5e-3 (the bwd modes).\n"
      "\n"
      "TFLOPS (FlashAttention's convention): forward 4*B*H*S^2*d, halved when\n"
      "causal; the backward 2.5x that, forward+backward 3.5x (the deterministic\n"
      "backward's extra dQ pass is not counted).  Cells with --window, --varlen or\n"
      "--seqused count instead 4*H*d per visible (query, key) pair, counted exactly\n"
      "on the host from the lengths, causal and the window.\n"
      "\n"
      "base ms, base TFLOPS, ms/base: a cell with features is also timed without\n"
      "them (with --varlen mixed: as --varlen equal, the same tokens in B sequences\n"
      "of S; with --varlen classes: the same sequences as separate equal-length\n"
      "batches, one dense call per length, all of them between the same two events,\n"
      "its TFLOPS counted over the same pairs; other features off), the two\n"
      "interleaved; a causal cell without features shows the non-causal cell of the\n"
      "same run.  ms/base below 1 is a speedup.  Mixed lengths hold fewer pairs than\n"
      "equal ones (less work): compare their TFLOPS.  Examples:\n"
      "  fagen-bench --head-dims 128 --seqlens 16384 --causal both  # causal skipping\n"
      "  fagen-bench --head-dims 128 --seqlens 32768 --causal yes --window 4096,0\n"
      "  fagen-bench --head-dims 128 --varlen mixed      # packed, mixed lengths\n"
      "  fagen-bench --head-dims 128 --seqlens 4096 --varlen classes  # vs unpacked\n"
      "  fagen-bench --head-dims 128 --softcap 30        # the softcap's cost\n"
      "  fagen-bench --mode fwdbwd                       # training, the whole grid\n");
}

/* Parses "L,R" (each >= -1). */
static int parse_window(const char *s, int *left, int *right) {
  char *end;
  long l = strtol(s, &end, 10);
  if (*end != ',') return -1;
  long r = strtol(end + 1, &end, 10);
  if (*end || l < -1 || r < -1 || l > 1 << 30 || r > 1 << 30) return -1;
  *left = (int)l;
  *right = (int)r;
  return 0;
}

/* Parses argv into o.  Returns 0, 1 after printing the help, 2 on a bad
 * option (usage printed). */
static int parse_args(int argc, char **argv, opts *o) {
  memset(o, 0, sizeof *o);
  int dflt_d[] = {64, 128, 256}, dflt_s[] = {512, 1024, 2048, 4096, 8192, 16384};
  memcpy(o->head_dims, dflt_d, sizeof dflt_d);
  o->n_head_dims = 3;
  memcpy(o->seqlens, dflt_s, sizeof dflt_s);
  o->n_seqlens = 6;
  o->causal_modes[0] = 0, o->causal_modes[1] = 1, o->n_causal = 2;
  o->dtype = FAGEN_DTYPE_BF16;
  o->reps = 20, o->warmup = 3, o->jobs = 8;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 1;
    } else if (!strcmp(a, "--mode") && next) {
      int m = 0;
      while (m < 3 && strcmp(next, mode_names[m]) != 0) m++;
      if (m == 3) goto bad;
      o->mode = (fg_mode)m, i++;
    } else if (!strcmp(a, "--deterministic")) {
      o->deterministic = 1;
    } else if (!strcmp(a, "--head-dims") && next) {
      if ((o->n_head_dims = fg_parse_int_list(next, o->head_dims, MAX_LIST)) <= 0) goto bad;
      i++;
    } else if (!strcmp(a, "--seqlens") && next) {
      if ((o->n_seqlens = fg_parse_int_list(next, o->seqlens, MAX_LIST)) <= 0) goto bad;
      i++;
    } else if (!strcmp(a, "--causal") && next) {
      if (!strcmp(next, "no")) o->causal_modes[0] = 0, o->n_causal = 1;
      else if (!strcmp(next, "yes")) o->causal_modes[0] = 1, o->n_causal = 1;
      else if (strcmp(next, "both") != 0) goto bad;
      i++;
    } else if (!strcmp(a, "--fp16")) {
      o->dtype = FAGEN_DTYPE_FP16;
    } else if (!strcmp(a, "--reps") && next) {
      o->reps = atoi(next), i++;
      if (o->reps < 1 || o->reps > 10000) goto bad;
    } else if (!strcmp(a, "--warmup") && next) {
      o->warmup = atoi(next), i++;
      if (o->warmup < 0 || o->warmup > 1000) goto bad;
    } else if (!strcmp(a, "--jobs") && next) {
      o->jobs = atoi(next), i++;
      if (o->jobs < 1) goto bad;
    } else if (!strcmp(a, "--window") && next) {
      if (parse_window(next, &o->fo.window_left, &o->fo.window_right) != 0) goto bad;
      o->fo.window = 1, i++;
    } else if (!strcmp(a, "--softcap") && next) {
      o->fo.softcap = strtof(next, NULL), i++;
      if (!(o->fo.softcap > 0) || isinf(o->fo.softcap)) goto bad;
    } else if (!strcmp(a, "--alibi")) {
      o->fo.alibi = 1;
    } else if (!strcmp(a, "--dropout") && next) {
      o->fo.dropout = strtof(next, NULL), i++;
      if (!(o->fo.dropout > 0 && o->fo.dropout < 1)) goto bad;
    } else if (!strcmp(a, "--varlen") && next) {
      if (!strcmp(next, "mixed")) o->fo.varlen = FG_VARLEN_MIXED;
      else if (!strcmp(next, "equal")) o->fo.varlen = FG_VARLEN_EQUAL;
      else if (!strcmp(next, "classes")) o->fo.varlen = FG_VARLEN_CLASSES;
      else goto bad;
      i++;
    } else if (!strcmp(a, "--seqused")) {
      o->fo.seqused = 1;
    } else if (!strcmp(a, "--json") && next) {
      o->json = next, i++;
    } else if (!strcmp(a, "--candidates")) {
      o->candidates = 1;
    } else if (!strcmp(a, "--vs-heuristic")) {
      o->vs_heuristic = 1;
    } else if (!strcmp(a, "--variant") && next) {
      if (o->n_forced == MAX_LIST || fagen_variant_parse(next, &o->forced[o->n_forced]) != FAGEN_OK) {
        fprintf(stderr, "fagen-bench: %s\n", fagen_last_error());
        return 2;
      }
      o->n_forced++, i++;
    } else {
      goto bad;
    }
  }
  if (o->fo.varlen != FG_VARLEN_NONE && o->fo.seqused) {
    fprintf(stderr, "fagen-bench: --varlen and --seqused are separate layouts; give one\n");
    return 2;
  }
  if (o->deterministic && o->mode == FG_MODE_FWD) {
    fprintf(stderr, "fagen-bench: --deterministic needs --mode bwd or fwdbwd\n");
    return 2;
  }
  return 0;
bad:
  usage(stderr);
  return 2;
}

/* The state of one run over the grid. */
typedef struct bench {
  opts o;
  fagen_ctx *ctx;
  fagen_device_class anonymous; /* this device with no name: no table, the heuristic */
  fg_inputs in;
  uint64_t seed, rng;
  FILE *json;
  int first_json, failures, n_ratio;
  double log_ratio;
  double noncausal_ms, noncausal_tf; /* the current (d, S)'s non-causal cell; 0: none */
  int forced_used[MAX_LIST];         /* --variant k was timed in some cell */
} bench;

/* The case of grid cell (d, S, causal). */
static int cell_case(const bench *bn, int d, int s, int causal, fg_case *c, char *err,
                     size_t errsize) {
  fg_cell std;
  fg_cell_standard(&std, bn->o.dtype, d, s, causal);
  return fg_case_init(c, bn->o.mode, bn->o.deterministic, bn->o.dtype, std.B, std.Sq, std.Hq,
                      std.D, causal, &bn->o.fo, err, errsize);
}

/* The most elements per tensor any cell of the run needs. */
static int inputs_needed(const bench *bn, size_t *n) {
  char err[256];
  *n = 0;
  for (int di = 0; di < bn->o.n_head_dims; di++)
    for (int si = 0; si < bn->o.n_seqlens; si++) {
      fg_case c;
      if (cell_case(bn, bn->o.head_dims[di], bn->o.seqlens[si], 0, &c, err, sizeof err) != 0) {
        fprintf(stderr, "fagen-bench: %s\n", err);
        fg_case_free(&c);
        return -1;
      }
      size_t need = (size_t)c.rows * c.heads * c.head_dim;
      if (need > *n) *n = need;
      fg_case_free(&c);
    }
  return 0;
}

/* The variants to time in a cell: selected, heuristic, forced, candidates.
 * Returns their count (at least 1). */
static int collect_runs(bench *bn, const fg_case *c, const fagen_variant *sel,
                        const fagen_variant *heur, fagen_variant *runs) {
  int nr = 0;
  if (bn->o.vs_heuristic) {
    runs[nr++] = *sel;
    runs[nr++] = *heur;
  }
  for (int f = 0; f < bn->o.n_forced && nr < MAX_RUNS; f++) {
    const fagen_variant *v = &bn->o.forced[f];
    if (fg_case_fits_variant(c, v, sel)) {
      runs[nr++] = *v;
      bn->forced_used[f] = 1;
    }
  }
  fagen_op ops[2];
  const int n_ops = bn->o.candidates ? fg_case_candidate_ops(c, sel, ops) : 0;
  for (int o = 0; o < n_ops; o++) {
    /* The space is larger than the valid runs kept (fwdwg: 432 combinations). */
    fagen_variant base = *sel;
    base.op = ops[o];
    base.pingpong = 0;
    base.prefetch_q = 0;
    size_t nc = 0;
    fagen_variant_candidates(&base, NULL, 0, &nc);
    fagen_variant *cand = nc ? calloc(nc, sizeof *cand) : NULL;
    if (!cand || fagen_variant_candidates(&base, cand, nc, &nc) != FAGEN_OK) nc = 0;
    for (size_t k = 0; k < nc; k++) {
      cand[k].features = sel->features; /* the candidates keep the call's features */
      if (fagen_variant_validate(&cand[k], NULL, 0) != FAGEN_OK) continue;
      if (nr == MAX_RUNS) {
        fprintf(stderr, "fagen-bench: warning: more than %d variants in a cell; the rest are not timed\n",
                MAX_RUNS);
        break;
      }
      runs[nr++] = cand[k];
    }
    free(cand);
  }
  if (nr == 0) runs[nr++] = *sel;
  return nr;
}

/* Allocates c over the run's inputs and selects its variant (with info), and
 * the heuristic's when heur is not NULL. */
static int prepare(bench *bn, fg_case *c, fagen_variant *sel, fagen_select_info *info,
                   fagen_variant *heur) {
  char err[1024];
  if (fg_case_alloc(bn->ctx, c, &bn->in, err, sizeof err) != 0) {
    fprintf(stderr, "fagen-bench: %s\n", err);
    return -1;
  }
  if (fg_case_select(bn->ctx, c, NULL, sel, info) != FAGEN_OK ||
      (heur && fg_case_select(bn->ctx, c, &bn->anonymous, heur, NULL) != FAGEN_OK)) {
    fprintf(stderr, "fagen-bench: %s\n", fagen_errmsg(bn->ctx));
    return -1;
  }
  return 0;
}

static double tolerance(const bench *bn) {
  if (bn->o.dtype == FAGEN_DTYPE_BF16) return 1e-2;
  return bn->o.mode == FG_MODE_FWD ? 2e-3 : 5e-3;
}

/* Checks one variant into *e; a failure is counted and reported.  Returns
 * whether the variant may be timed. */
static int check_one(bench *bn, const fg_case *c, const fagen_variant *v, double *e) {
  char err[1024];
  *e = fg_case_check(bn->ctx, c, v, &bn->rng, err, sizeof err);
  if (*e < 0) fprintf(stderr, "fagen-bench: %s\n", err);
  if (*e >= 0 && *e < tolerance(bn)) return 1;
  char name[FAGEN_VARIANT_NAME_MAX];
  fagen_variant_name(v, name, sizeof name);
  if (*e >= 0) fprintf(stderr, "fagen-bench: %s: error %.2e over the limit\n", name, *e);
  bn->failures++;
  return 0; /* a wrong kernel is never timed */
}

/* One row of results. */
typedef struct row {
  const fg_case *c;
  const fagen_variant *v;
  int is_default, is_best;
  double err, ms, tflops, base_ms, base_tflops;
} row;

static void print_row(const row *r) {
  char name[FAGEN_VARIANT_NAME_MAX], feat[128], base[96];
  fagen_variant_name(r->v, name, sizeof name);
  fg_case_describe(r->c, feat, sizeof feat);
  if (r->base_ms > 0 && r->ms > 0)
    snprintf(base, sizeof base, "%.3f | %.1f | %.3f", r->base_ms, r->base_tflops,
             r->ms / r->base_ms);
  else
    snprintf(base, sizeof base, "- | - | -");
  printf("| %d | %d | %s | %d | %d | %s%s%s | %.1e | %.3f | %.1f | %s | %s |\n", r->c->head_dim,
         r->c->seqlen, r->c->causal ? "yes" : "no", r->c->batch, r->c->heads, name,
         r->is_default ? " (default)" : "", r->is_best ? " **best**" : "", r->err, r->ms,
         r->tflops, feat, base);
}

static void json_row(bench *bn, const row *r) {
  if (!bn->json) return;
  char name[FAGEN_VARIANT_NAME_MAX], feat[128];
  fagen_variant_name(r->v, name, sizeof name);
  fg_case_describe(r->c, feat, sizeof feat);
  fprintf(bn->json,
          "%s  {\"mode\": \"%s\", \"deterministic\": %s, \"head_dim\": %d, \"seqlen\": %d, "
          "\"causal\": %s, \"features\": \"%s\", \"batch\": %d, \"heads\": %d, "
          "\"variant\": \"%s\", \"default\": %s, \"rel_err\": %.3e, \"ms\": %.5f, "
          "\"flops\": %.6e, \"tflops\": %.2f, \"base_ms\": %.5f, \"base_tflops\": %.2f}",
          bn->first_json ? "" : ",\n", mode_names[bn->o.mode],
          bn->o.deterministic ? "true" : "false", r->c->head_dim, r->c->seqlen,
          r->c->causal ? "true" : "false", feat, r->c->batch, r->c->heads, name,
          r->is_default ? "true" : "false", r->err, r->ms, fg_case_flops(r->c), r->tflops,
          r->base_ms, r->base_tflops);
  bn->first_json = 0;
}

/* --vs-heuristic's row: the selected variant (runs[0]) against the
 * heuristic's (runs[1]). */
static void print_vs(bench *bn, const fg_case *c, const fagen_variant *runs, const double *tf,
                     const fagen_select_info *info) {
  static const char *const sources[] = {"forced", "user table", "shipped table", "heuristic"};
  char a[FAGEN_VARIANT_NAME_MAX], b[FAGEN_VARIANT_NAME_MAX], feat[128];
  fagen_variant_name(&runs[0], a, sizeof a);
  fagen_variant_name(&runs[1], b, sizeof b);
  fg_case_describe(c, feat, sizeof feat);
  double ratio = tf[1] > 0 ? tf[0] / tf[1] : 0;
  if (ratio > 0) bn->log_ratio += log(ratio), bn->n_ratio++;
  printf("| %d | %d | %s | %s (%s) | %.1f | %s | %.1f | %.3f | %s |\n", c->head_dim, c->seqlen,
         c->causal ? "yes" : "no", a, sources[info->source], tf[0],
         fg_variant_name_cmp(&runs[0], &runs[1]) == 0 ? "(same)" : b, tf[1], ratio, feat);
}

/* The base of a feature cell, allocated, selected and checked: one case,
 * or with --varlen classes one per sequence length (parts), timed together;
 * n is 0 without features (or when a check failed). */
typedef struct base_run {
  int n;
  fg_case c[FG_CASE_MAX_PARTS];
  fagen_variant v[FG_CASE_MAX_PARTS];
  double ms;
} base_run;

static int base_prepare(bench *bn, const fg_case *c, base_run *b) {
  char err[1024];
  memset(b, 0, sizeof *b);
  if (bn->o.vs_heuristic || !fg_features_any(&c->fo)) return 0;
  int n = 1;
  if (c->fo.varlen == FG_VARLEN_CLASSES ? fg_case_parts(c, b->c, &n, err, sizeof err)
                                        : fg_case_base(c, &b->c[0], err, sizeof err)) {
    fprintf(stderr, "fagen-bench: %s\n", err);
    return -1;
  }
  b->n = n;
  for (int k = 0; k < n; k++) {
    if (prepare(bn, &b->c[k], &b->v[k], NULL, NULL) != 0) return -1;
    double e;
    if (!check_one(bn, &b->c[k], &b->v[k], &e)) b->n = 0; /* counted as a failure; no ratio */
  }
  return 0;
}

static void base_free(base_run *b) {
  for (int k = 0; k < FG_CASE_MAX_PARTS; k++) fg_case_free(&b->c[k]);
}

/* Checks and times every run of one cell (and its base), then prints. */
static int run_cell(bench *bn, int d, int s, int causal) {
  char err[1024];
  fg_case c;
  base_run base;
  memset(&base, 0, sizeof base);
  fagen_variant runs[MAX_RUNS], sel, heur;
  fagen_select_info info;
  int rc = -1;
  if (cell_case(bn, d, s, causal, &c, err, sizeof err) != 0) {
    fprintf(stderr, "fagen-bench: %s\n", err);
    goto done;
  }
  if (prepare(bn, &c, &sel, &info, &heur) != 0) goto done;
  int nr = collect_runs(bn, &c, &sel, &heur, runs);
  fg_compile_all(bn->ctx, runs, (size_t)nr, bn->o.jobs, NULL, NULL);
  double errs[MAX_RUNS], mss[MAX_RUNS], tf[MAX_RUNS];
  int ok[MAX_RUNS];
  for (int k = 0; k < nr; k++) {
    mss[k] = tf[k] = 0;
    ok[k] = check_one(bn, &c, &runs[k], &errs[k]);
  }
  if (base_prepare(bn, &c, &base) != 0) goto done;
  /* Every run of the cell (and the baseline) is timed call by call in turn,
   * so that drift and the clock dropping as the GPU heats hit all alike. */
  {
    const fg_case *tc[MAX_RUNS + FG_CASE_MAX_PARTS];
    const fagen_variant *tv[MAX_RUNS + FG_CASE_MAX_PARTS];
    int slot[MAX_RUNS], counts[MAX_RUNS + 1], np = 0, nt = 0;
    double tms[MAX_RUNS + 1];
    for (int k = 0; k < nr; k++)
      if (ok[k]) {
        slot[k] = nt;
        counts[nt++] = 1;
        tc[np] = &c;
        tv[np++] = &runs[k];
      }
    if (base.n) { /* one item: every part's call */
      counts[nt++] = base.n;
      for (int p = 0; p < base.n; p++) {
        tc[np] = &base.c[p];
        tv[np++] = &base.v[p];
      }
    }
    if (fg_case_time_groups(bn->ctx, tc, tv, counts, nt, bn->o.warmup, bn->o.reps, tms, err,
                            sizeof err) != 0) {
      fprintf(stderr, "fagen-bench: %s\n", err);
      goto done;
    }
    for (int k = 0; k < nr; k++)
      if (ok[k]) mss[k] = tms[slot[k]];
    if (base.n) base.ms = tms[nt - 1];
  }
  const double flops = fg_case_flops(&c);
  int best_k = -1;
  for (int k = 0; k < nr; k++) {
    tf[k] = mss[k] > 0 ? flops / mss[k] * 1e-9 : 0;
    if (tf[k] > 0 && (best_k < 0 || tf[k] > tf[best_k])) best_k = k;
  }
  const int plain = !fg_features_any(&c.fo);
  double base_ms = base.n ? base.ms : plain && causal ? bn->noncausal_ms : 0;
  /* separate batches do the packed call's work: count its pairs */
  const double base_flops =
      c.fo.varlen == FG_VARLEN_CLASSES ? flops : base.n ? fg_case_flops(&base.c[0]) : 0;
  double base_tf = base.n && base.ms > 0 ? base_flops / base.ms * 1e-9
                   : plain && causal     ? bn->noncausal_tf
                                         : 0;
  if (bn->o.vs_heuristic) print_vs(bn, &c, runs, tf, &info);
  for (int k = 0; k < nr; k++) {
    const int is_default =
        fg_variant_name_cmp(&runs[k], &sel) == 0 && (!bn->o.vs_heuristic || k == 0);
    row r = {&c,      &runs[k], is_default, nr > 1 && k == best_k, errs[k], mss[k], tf[k],
             base_ms, base_tf};
    if (!bn->o.vs_heuristic) print_row(&r);
    json_row(bn, &r);
    if (plain && !causal && is_default) bn->noncausal_ms = mss[k], bn->noncausal_tf = tf[k];
  }
  fflush(stdout);
  rc = 0;
done:
  base_free(&base);
  fg_case_free(&c);
  return rc;
}

/* Opens the device, the context and the JSON file, draws the inputs and
 * prints the header.  Returns 0, 1 on failure, 2 without a GPU. */
static int bench_open(bench *bn) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) return 2;
  struct cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 1;
  if (fagen_ctx_create(&bn->ctx) != FAGEN_OK) return 1;
  if (fagen_device_class_current(bn->ctx, &bn->anonymous) != FAGEN_OK) {
    fprintf(stderr, "fagen-bench: %s\n", fagen_errmsg(bn->ctx));
    return 1;
  }
  bn->anonymous.name[0] = '\0'; /* matches no table: the heuristic */
  size_t n;
  char err[1024];
  bn->seed = bn->rng = fg_rand_seed();
  if (inputs_needed(bn, &n) != 0) return 1;
  if (fg_inputs_alloc(&bn->in, bn->o.dtype, n, &bn->rng, err, sizeof err) != 0) {
    fprintf(stderr, "fagen-bench: %s\n", err);
    return 1;
  }
  const char *dt = bn->o.dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16";
  if (bn->o.json && !(bn->json = fopen(bn->o.json, "w"))) {
    perror(bn->o.json);
    return 1;
  }
  if (bn->json)
    fprintf(bn->json,
            "{\"device\": \"%s\", \"dtype\": \"%s\", \"mode\": \"%s\", \"deterministic\": %s, "
            "\"reps\": %d, \"cells\": [\n",
            prop.name, dt, mode_names[bn->o.mode], bn->o.deterministic ? "true" : "false",
            bn->o.reps);
  printf("fagen-bench --mode %s%s on %s, %s, median of %d after %d warm-up (seed %llu)\n",
         mode_names[bn->o.mode], bn->o.deterministic ? " --deterministic" : "", prop.name, dt,
         bn->o.reps, bn->o.warmup, (unsigned long long)bn->seed);
  if (bn->o.vs_heuristic)
    printf("| d | S | causal | selected (source) | TFLOPS | heuristic | TFLOPS | ratio | features "
           "|\n|---|---|---|---|---|---|---|---|---|\n");
  else
    printf("| d | S | causal | B | H | variant | err | ms | TFLOPS | features | base ms | base "
           "TFLOPS | ms/base |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  return 0;
}

static void bench_close(bench *bn) {
  if (bn->o.vs_heuristic && bn->n_ratio)
    printf("\ngeometric mean of selected / heuristic over %d cells: %.3f\n", bn->n_ratio,
           exp(bn->log_ratio / bn->n_ratio));
  if (bn->json) {
    fprintf(bn->json, "\n], \"seed\": %llu}\n", (unsigned long long)bn->seed);
    fclose(bn->json);
  }
  fg_inputs_free(&bn->in);
  fagen_ctx_destroy(bn->ctx);
  if (bn->failures)
    fprintf(stderr, "fagen-bench: %d runs failed the correctness check\n", bn->failures);
}

int main(int argc, char **argv) {
  static bench bn;
  bn.first_json = 1;
  int st = parse_args(argc, argv, &bn.o);
  if (st) return st == 1 ? 0 : 2;
  st = bench_open(&bn);
  if (st == 2) {
    printf("fagen-bench: no GPU here; nothing to time.\n");
    return 0;
  }
  for (int di = 0; st == 0 && di < bn.o.n_head_dims; di++)
    for (int si = 0; st == 0 && si < bn.o.n_seqlens; si++) {
      bn.noncausal_ms = bn.noncausal_tf = 0;
      for (int ci = 0; st == 0 && ci < bn.o.n_causal; ci++)
        st = run_cell(&bn, bn.o.head_dims[di], bn.o.seqlens[si], bn.o.causal_modes[ci]) ? 1 : 0;
    }
  bench_close(&bn);
  /* A --variant that fits no cell was a typo or a wrong grid: say so. */
  for (int f = 0; st == 0 && f < bn.o.n_forced; f++)
    if (!bn.forced_used[f]) {
      char name[FAGEN_VARIANT_NAME_MAX];
      fagen_variant_name(&bn.o.forced[f], name, sizeof name);
      fprintf(stderr,
              "fagen-bench: --variant %s fits no cell (op, head_dim, dtype, causal, "
              "features and arch must match)\n",
              name);
    }
  return st ? 1 : bn.failures ? 1 : 0;
}
