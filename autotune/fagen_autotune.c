/* fagen-autotune: finds the fastest variant of each case on the GPU at hand
 * and writes the tuning table that the runtime reads (public API only, plus
 * the CUDA runtime for buffers and events, and Jansson for the JSON).
 *
 * A case is (op, dtype, head_dim, causal, sequence-length bucket), measured on
 * the standard grid's shape (B*S = 16384 tokens, hidden 2048).  The op is the
 * kernel family: the forward's fwd (mma.sync) and the backward's bwd and
 * bwddet (deterministic) everywhere, and on sm_90a also fwdwg and bwdwg
 * (wgmma), which serve the plain calls there while fwd and bwd serve those
 * with features; each family's cases compare against its own heuristic.  For
 * each (op, dtype, head_dim, causal) the tile candidates are enumerated and
 * the invalid ones dropped before compiling (-v says why); the rest are
 * compiled in parallel threads and each is checked once against the heuristic
 * default kernel (odd shape, poisoned outputs: O, or dQ, dK and dV) before any
 * of its times is trusted.
 * Every case then times each candidate with CUDA events (warm-up, median of
 * repeats, two input sets alternated).  The winner must beat the default by
 * --margin (2%) to replace it, and then again by half the margin when the two
 * are timed once more by themselves (tune_pick.h); equal times go to the
 * earlier name, so the same measurements always give the same table. */
#include <cuda_runtime.h>
#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fagen.h"
#include "fg_ref.h"
#include "fg_timing.h"
#include "fg_tool_util.h"
#include "tune_measure.h"
#include "tune_pick.h"

#define MAX_LIST 32
#define MAX_CAND 192 /* per case: fwdwg at head_dim 32 has 148 valid candidates */
#define MAX_OPS 5

typedef struct opts {
  fagen_op ops[MAX_OPS];
  int n_ops; /* 0: every family the target has */
  int head_dims[MAX_LIST], n_head_dims;
  int seqlens[MAX_LIST], n_seqlens;
  int causal_modes[2], n_causal;
  fagen_dtype dtypes[2];
  int n_dtypes;
  unsigned feature_sets[MAX_LIST]; /* FAGEN_FEATURE_* bits per set; 0: plain calls */
  int n_feature_sets;
  const char *cases, *only, *out, *report, *device;
  double budget, margin;
  int jobs, reps, warmup, verbose, heuristic_table, screen, no_confirm;
} opts;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: fagen-autotune [--out FILE] [--report DIR] [--budget SECONDS] [--jobs N]\n"
          "                      [--ops LIST] [--head-dims LIST] [--seqlens LIST]\n"
          "                      [--dtypes bf16,fp16] [--features LIST]\n"
          "                      [--causal no|yes|both] [--cases GLOB] [--only GLOB]\n"
          "                      [--reps N] [--warmup N] [--margin PERCENT] [--screen K]\n"
          "                      [--no-confirm]\n"
          "                      [-v]\n"
          "       fagen-autotune --heuristic-table --device \"NAME,TARGET,SMS\" --out FILE\n"
          "\n"
          "Measures the tile candidates of each case on this GPU and writes its tuning\n"
          "table (default: the user table libfagen reads for this device,\n"
          "$FAGEN_TUNE_DIR/SLUG.json or CACHE_ROOT/tune/SLUG.json).\n"
          "\n"
          "  --ops LIST         kernel families (default: every one this GPU has):\n"
          "                     fwd, bwd, bwddet (mma.sync: forward, backward,\n"
          "                     deterministic backward) and, on sm_90a, fwdwg and\n"
          "                     bwdwg (wgmma; plain calls use them there, fwd and bwd\n"
          "                     serve the calls with features)\n"
          "  --head-dims LIST   head dims (default 32,64,96,128,160,192,224,256;\n"
          "                     bwdwg has 64, 96, 128 and 256 and skips the others)\n"
          "  --seqlens LIST     sequence-length buckets (default 512,...,16384)\n"
          "  --dtypes LIST      bf16 and/or fp16 (default both)\n"
          "  --features LIST    feature sets to tune for (default none: plain calls):\n"
          "                     comma-separated, each 'none' or tokens joined by '+'\n"
          "                     of varlen, window, softcap, alibi, dropout, e.g.\n"
          "                     'softcap,varlen+softcap'.  A call with exactly those\n"
          "                     features takes their entry; others the plain call's\n"
          "                     tiles.  Measured at softcap 30; varlen: the tokens\n"
          "                     packed in sequences of S/8..S tokens; window S/4 each\n"
          "                     side (right 0 when causal); ALiBi; dropout 0.1; each\n"
          "                     candidate checked against the float64 reference.\n"
          "                     Families without a kernel for a set have no cases\n"
          "                     (fwdwg: softcap and varlen only; bwdwg: none)\n"
          "  --causal MODE      no, yes or both (default)\n"
          "  --cases GLOB       keep cases whose name matches, e.g. 'fwd_d128_bf16_*'\n"
          "                     (names: OP_dD_DTYPE[_causal][_FEATURES]_sSEQ, OP as\n"
          "                     in --ops, FEATURES the set's tokens joined by '_')\n"
          "  --only GLOB        keep candidate variants whose name matches\n"
          "  --budget SECONDS   stop measuring after this long; untuned cases keep the\n"
          "                     heuristic (they get no entry)\n"
          "  --jobs N           compile threads (default: CPUs)\n"
          "  --reps N, --warmup N  timed and warm-up calls per candidate (10, 2)\n"
          "  --margin PERCENT   how much faster than the default a winner must be (2)\n"
          "  --no-confirm       keep a winner without timing it again: by default a\n"
          "                     winner other than the default is re-timed against the\n"
          "                     default alone and kept only if still at least half\n"
          "                     the margin faster\n"
          "  --screen K         per (op, dtype, head_dim, causal, features), time every\n"
          "                     candidate briefly at the smallest and the middle bucket\n"
          "                     and take the K fastest of each, plus the default, to\n"
          "                     every bucket (default 4; 0: every candidate everywhere)\n"
          "  --report DIR       write DIR/report.md (winner and runner-up per case) and\n"
          "                     DIR/tflops_OP.svg per op (TFLOPS against sequence\n"
          "                     length, a panel per head_dim; the backward's TFLOPS\n"
          "                     count 2.5x the forward's FLOPs), tflops_OP_FEATURES.svg\n"
          "                     per op and feature set of --features\n"
          "  -v                 also list the candidates dropped before compiling, and why\n"
          "  --heuristic-table  write the heuristic's choices for --device as a table\n"
          "                     marked \"measured\": false (no GPU needed)\n"
          "\n"
          "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

/* One tuned case. */
typedef struct tcase {
  fagen_op op; /* the kernel family */
  fagen_dtype dtype;
  int head_dim, causal, seqlen;
  unsigned features; /* FAGEN_FEATURE_* bits the calls have */
  char name[128];
  int n_cand;
  fagen_variant cand[MAX_CAND];
  double ms[MAX_CAND];
  int winner, runner_up, deflt; /* indices, -1 if none */
  int done;
  /* The confirmation of a winner other than the default (tp_confirms):
     0 not needed or not done, 1 kept, -1 rejected (the default won); the
     default's time over the winner's in that second timing. */
  int confirm;
  double confirm_gain;
} tcase;

/* An op's name token ("fwd", "fwdwg"): the head of its variants' names. */
static void op_token(fagen_op op, char *buf, size_t size) {
  fagen_variant v;
  memset(&v, 0, sizeof v);
  v.op = op;
  v.dtype = FAGEN_DTYPE_BF16;
  char name[FAGEN_VARIANT_NAME_MAX] = "?";
  fagen_variant_name(&v, name, sizeof name);
  name[strcspn(name, "_")] = '\0';
  snprintf(buf, size, "%s", name);
}

/* Every family, in the order cases of one shape are measured. */
static const fagen_op all_ops[MAX_OPS] = {FAGEN_OP_FWD, FAGEN_OP_FWD_WGMMA, FAGEN_OP_BWD,
                                          FAGEN_OP_BWD_WGMMA, FAGEN_OP_BWD_DET};

static int wgmma_op(fagen_op op) { return op == FAGEN_OP_FWD_WGMMA || op == FAGEN_OP_BWD_WGMMA; }

/* The families tuned for a target: those of --ops (default all) that it has;
 * fwdwg and bwdwg only on sm_90a. */
static int case_ops(const opts *o, const fagen_target *t, fagen_op ops[MAX_OPS]) {
  const int hopper = t->arch == 90 && t->arch_specific;
  int n = 0;
  for (int i = 0; i < MAX_OPS; i++) {
    int asked = o->n_ops == 0;
    for (int k = 0; k < o->n_ops; k++) asked |= o->ops[k] == all_ops[i];
    if (asked && (hopper || !wgmma_op(all_ops[i]))) ops[n++] = all_ops[i];
  }
  return n;
}

/* Parses --ops: a comma-separated list of op tokens.  Returns 0 or -1. */
static int parse_ops(const char *list, opts *o) {
  o->n_ops = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", list);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    int found = 0;
    for (int i = 0; i < MAX_OPS && !found; i++) {
      char name[16];
      op_token(all_ops[i], name, sizeof name);
      if (strcmp(tok, name) == 0) {
        for (int k = 0; k < o->n_ops; k++) found |= o->ops[k] == all_ops[i];
        if (!found) o->ops[o->n_ops++] = all_ops[i];
        found = 1;
      }
    }
    if (!found) {
      fprintf(stderr, "fagen-autotune: --ops: '%s' is not one of fwd, fwdwg, bwd, bwdwg, bwddet\n", tok);
      return -1;
    }
  }
  return o->n_ops > 0 ? 0 : -1;
}

static tm_shape shape_of(const tcase *c) {
  tm_shape s = {c->op, c->dtype, c->head_dim, c->causal, c->seqlen, c->features};
  return s;
}

/* The tokens of a feature set joined by sep ("" for none): fagen_features_name's
 * '+' replaced by sep. */
static void features_string(unsigned f, char sep, char *buf, size_t size) {
  if (fagen_features_name(f, buf, size) != FAGEN_OK) snprintf(buf, size, "?");
  for (char *c = buf; *c; c++)
    if (*c == '+') *c = sep;
}

/* Parses --features: comma-separated sets, each "none" or feature tokens
 * joined by '+'.  Returns 0 or -1. */
static int parse_features(const char *list, opts *o) {
  o->n_feature_sets = 0;
  char buf[512];
  snprintf(buf, sizeof buf, "%s", list);
  for (char *save = NULL, *set = strtok_r(buf, ",", &save); set; set = strtok_r(NULL, ",", &save)) {
    unsigned f = 0;
    if (strcmp(set, "none") != 0)
      for (char *s2 = NULL, *tok = strtok_r(set, "+", &s2); tok; tok = strtok_r(NULL, "+", &s2)) {
        /* The token of each FAGEN_FEATURE_* bit, bit 0 up, until one has none. */
        char name[32], known[128] = "none";
        unsigned bit = 0;
        for (unsigned b = 1; b && !bit && fagen_features_name(b, name, sizeof name) == FAGEN_OK; b <<= 1) {
          if (strcmp(tok, name) == 0) bit = b;
          snprintf(known + strlen(known), sizeof known - strlen(known), ", %s", name);
        }
        if (!bit) {
          fprintf(stderr, "fagen-autotune: --features: '%s' is not one of %s\n", tok, known);
          return -1;
        }
        f |= bit;
      }
    int dup = 0;
    for (int k = 0; k < o->n_feature_sets; k++) dup |= o->feature_sets[k] == f;
    if (!dup) {
      if (o->n_feature_sets == MAX_LIST) return -1;
      o->feature_sets[o->n_feature_sets++] = f;
    }
  }
  return o->n_feature_sets > 0 ? 0 : -1;
}

static void case_name(const tcase *c, char *buf, size_t size) {
  char op[16], feats[64];
  op_token(c->op, op, sizeof op);
  features_string(c->features, '_', feats, sizeof feats);
  snprintf(buf, size, "%s_d%d_%s%s%s%s_s%d", op, c->head_dim,
           c->dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", c->causal ? "_causal" : "",
           feats[0] ? "_" : "", feats, c->seqlen);
}

/* ---- parallel compile ------------------------------------------------------ */

/* Progress of the parallel compile: which candidates compiled. */
typedef struct compile_progress {
  fagen_ctx *ctx;
  const fagen_variant *vs;
  int *ok;
  size_t n;
  int tty;
  double t0, t_last; /* start, and when the latest compile finished */
} compile_progress;

/* Called by the compile threads (serialized): the measuring loop's progress
 * line shows the count, so this reports only the variants that fail. */
static void on_compiled(void *user, size_t i, fagen_status st, size_t done) {
  compile_progress *p = user;
  (void)done;
  p->ok[i] = st == FAGEN_OK;
  p->t_last = now();
  if (!p->ok[i]) {
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&p->vs[i], name, sizeof name);
    fprintf(stderr, "%sfagen-autotune: %s does not compile (dropped): %s\n", p->tty ? "\n" : "",
            name, fagen_errmsg(p->ctx));
  }
}

/* ---- the table ------------------------------------------------------------- */

static int write_table(const opts *o, const fagen_device_class *dc, int measured,
                       const tcase *cases, int n, const char *path) {
  char hash[65], target[16], date[32];
  if (fagen_template_hash(hash) != FAGEN_OK) {
    fprintf(stderr, "fagen-autotune: %s\n", fagen_last_error());
    return -1;
  }
  fagen_target_name(&dc->target, 1, target, sizeof target);
  time_t t = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d", gmtime(&t));
  json_t *root = json_object();
  json_object_set_new(root, "format", json_string("fagen-tune-table"));
  json_object_set_new(root, "format_version", json_integer(1));
  json_object_set_new(root, "fagen_version", json_string(fagen_version()));
  json_object_set_new(root, "template_hash", json_string(hash));
  json_t *dev = json_object();
  json_object_set_new(dev, "name", json_string(dc->name));
  json_object_set_new(dev, "target", json_string(target));
  json_object_set_new(dev, "sm_count", json_integer(dc->sm_count));
  json_object_set_new(root, "device", dev);
  json_object_set_new(root, "measured", json_boolean(measured));
  int maj = 0, min = 0, drv = 0;
  if (fagen_nvrtc_version(&maj, &min) == FAGEN_OK) {
    char v[32];
    snprintf(v, sizeof v, "%d.%d", maj, min);
    json_object_set_new(root, "nvrtc", json_string(v));
  }
  if (measured && fagen_driver_version(&drv) == FAGEN_OK)
    json_object_set_new(root, "driver", json_integer(drv));
  json_object_set_new(root, "date", json_string(date));
  json_t *pol = json_object();
  if (measured) {
    json_object_set_new(pol, "statistic", json_string("median of CUDA-event times"));
    json_object_set_new(pol, "warmup", json_integer(o->warmup));
    json_object_set_new(pol, "repeats", json_integer(o->reps));
    json_object_set_new(pol, "input_sets", json_integer(2));
    json_object_set_new(pol, "margin", json_real(o->margin));
    json_object_set_new(pol, "screen", json_integer(o->screen));
    json_object_set_new(pol, "confirm",
                        json_string(o->no_confirm ? "none"
                                                  : "a winner other than the default timed again "
                                                    "against it alone, kept if faster by half the "
                                                    "margin"));
    json_object_set_new(pol, "shape", json_string("B*S = 16384 tokens, hidden 2048, seqlen_q = seqlen_k"));
    json_object_set_new(pol, "check", json_string("each candidate against the heuristic default on an "
                                                  "odd shape: O (forward), dQ, dK and dV (backward); "
                                                  "with features against the float64 reference"));
    int any_features = 0;
    for (int i = 0; i < n; i++) any_features |= cases[i].features != 0;
    if (any_features)
      json_object_set_new(pol, "features",
                          json_string("entries with \"features\" measured with them on: softcap 30; "
                                      "varlen: the tokens packed in sequences of S/8..S tokens "
                                      "(fixed seed); window S/4 left and right (0 when causal); "
                                      "ALiBi; dropout 0.1"));
    json_object_set_new(pol, "backward", json_string("the backward alone; O and LSE from the selected "
                                                     "forward, two input sets"));
  } else {
    int wgmma = 0;
    for (int i = 0; i < n; i++) wgmma |= wgmma_op(cases[i].op);
    json_object_set_new(pol, "source",
                        json_string(wgmma ? "heuristic: FlashAttention-2's published tiles (fwd, bwd, "
                                            "bwddet) and the wgmma families' defaults (fwdwg, bwdwg), "
                                            "not measured"
                                          : "heuristic: FlashAttention-2's published tiles, not measured"));
  }
  json_object_set_new(root, "policy", pol);
  json_t *entries = json_array();
  for (int i = 0; i < n; i++) {
    const tcase *c = &cases[i];
    if (!c->done || c->winner < 0) continue;
    char name[FAGEN_VARIANT_NAME_MAX], op[16];
    op_token(c->op, op, sizeof op);
    json_t *e = json_object();
    json_object_set_new(e, "op", json_string(op));
    json_object_set_new(e, "dtype", json_string(c->dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16"));
    json_object_set_new(e, "head_dim", json_integer(c->head_dim));
    json_object_set_new(e, "causal", json_boolean(c->causal));
    json_object_set_new(e, "seqlen", json_integer(c->seqlen));
    if (c->features) {
      char feats[64];
      features_string(c->features, '+', feats, sizeof feats);
      json_object_set_new(e, "features", json_string(feats));
    }
    fagen_variant_name(&c->cand[c->winner], name, sizeof name);
    json_object_set_new(e, "variant", json_string(name));
    if (measured) {
      json_object_set_new(e, "ms", json_real(c->ms[c->winner]));
      if (c->runner_up >= 0) {
        fagen_variant_name(&c->cand[c->runner_up], name, sizeof name);
        json_object_set_new(e, "runner_up", json_string(name));
        json_object_set_new(e, "runner_up_ms", json_real(c->ms[c->runner_up]));
      }
    }
    json_array_append_new(entries, e);
  }
  json_object_set_new(root, "entries", entries);
  char tmp[1400];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int rc = json_dump_file(root, tmp, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (rc != 0 || rename(tmp, path) != 0) {
    perror(path);
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* ---- the report ------------------------------------------------------------ */

static double tflops_of(const tcase *c, double ms) {
  const tm_shape s = shape_of(c);
  return ms > 0 ? tm_flops(&s) / ms * 1e-9 : 0;
}

/* DIR/tflops_OP.svg (with features DIR/tflops_OP_FEATURES.svg), a panel per
 * head_dim that op has cases of with those features: TFLOPS of the winner
 * (solid) and of the heuristic default (dashed) against sequence length, a
 * line per dtype x causal. */
static int write_svg(const opts *o, const tcase *cases, int n, const fagen_device_class *dc,
                     fagen_op op, unsigned features) {
  static const char *const colors[4] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
  const double PW = 420, PH = 260, L = 50, R = 20, T = 30, B = 40, LEG = 30;
  int dims[MAX_LIST], n_dims = 0;
  for (int di = 0; di < o->n_head_dims; di++) {
    int any = 0;
    for (int i = 0; i < n && !any; i++)
      any = cases[i].op == op && cases[i].features == features &&
            cases[i].head_dim == o->head_dims[di] && cases[i].done && cases[i].winner >= 0;
    if (any) dims[n_dims++] = o->head_dims[di];
  }
  if (!n_dims) return 0;
  char tok[16], path[1400], feats[64], with[80] = "";
  op_token(op, tok, sizeof tok);
  features_string(features, '_', feats, sizeof feats);
  if (features) snprintf(with, sizeof with, " with %s", feats);
  const int cols = 2, rows = (n_dims + 1) / 2;
  snprintf(path, sizeof path, "%s/tflops_%s%s%s.svg", o->report, tok, features ? "_" : "", feats);
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    return -1;
  }
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
             "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%%\" "
             "height=\"100%%\" fill=\"white\"/>\n",
          cols * PW, rows * PH + LEG + 20);
  fprintf(f, "<text x=\"10\" y=\"18\" font-size=\"14\">fagen-autotune on %s, %s%s%s: TFLOPS "
             "against sequence length (tuned solid, heuristic dashed)</text>\n",
          dc->name, tok, with, tm_is_backward(op) ? " (2.5x the forward's FLOPs)" : "");
  int line = 0;
  for (int ti = 0; ti < o->n_dtypes; ti++)
    for (int ci = 0; ci < o->n_causal; ci++, line++)
      fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s%s</text>\n", 10 + 120.0 * line,
              rows * PH + LEG + 12, colors[line % 4],
              o->dtypes[ti] == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", o->causal_modes[ci] ? " causal" : "");
  double lmin = log2(o->seqlens[0]), lmax = log2(o->seqlens[o->n_seqlens - 1]);
  if (lmax <= lmin) lmax = lmin + 1;
  for (int di = 0; di < n_dims; di++) {
    int d = dims[di];
    double ox = (di % cols) * PW, oy = 20 + (di / cols) * PH, ymax = 1;
    for (int i = 0; i < n; i++)
      if (cases[i].op == op && cases[i].features == features && cases[i].head_dim == d &&
          cases[i].done && cases[i].winner >= 0)
        ymax = fmax(ymax, tflops_of(&cases[i], cases[i].ms[cases[i].winner]));
    ymax = ceil(ymax / 100.0) * 100.0;
#define XS(s) (ox + L + (log2(s) - lmin) / (lmax - lmin) * (PW - L - R))
#define YS(t) (oy + PH - B - (t) / ymax * (PH - T - B))
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">head_dim %d</text>\n", ox + L,
            oy + T - 8, d);
    for (int k = 0; k <= 4; k++) {
      double t = ymax * k / 4;
      fprintf(f, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                 "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.0f</text>\n",
              ox + L, ox + PW - R, YS(t), YS(t), ox + L - 4, YS(t) + 4, t);
    }
    for (int si = 0; si < o->n_seqlens; si++)
      fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n",
              XS(o->seqlens[si]), oy + PH - B + 14, o->seqlens[si]);
    line = 0;
    for (int ti = 0; ti < o->n_dtypes; ti++)
      for (int ci = 0; ci < o->n_causal; ci++, line++)
        for (int pass = 0; pass < 2; pass++) { /* 0: winner, 1: default */
          fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
                  colors[line % 4], pass ? " stroke-dasharray=\"5,4\"" : "");
          for (int i = 0; i < n; i++) {
            const tcase *c = &cases[i];
            if (c->op != op || c->features != features || c->head_dim != d || c->dtype != o->dtypes[ti] ||
                c->causal != o->causal_modes[ci] || !c->done || c->winner < 0)
              continue;
            int k = pass ? c->deflt : c->winner;
            if (k >= 0 && c->ms[k] > 0) fprintf(f, "%.1f,%.1f ", XS(c->seqlen), YS(tflops_of(c, c->ms[k])));
          }
          fprintf(f, "\"/>\n");
        }
#undef XS
#undef YS
  }
  fprintf(f, "</svg>\n");
  fclose(f);
  return 0;
}

static int write_report(const opts *o, const tcase *cases, int n, const fagen_device_class *dc) {
  mkdir(o->report, 0777);
  char path[1400];
  snprintf(path, sizeof path, "%s/report.md", o->report);
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    return -1;
  }
  fprintf(f, "# fagen-autotune on %s (%d SMs)\n\n", dc->name, dc->sm_count);
  fprintf(f, "TFLOPS: the forward's FLOPs (4 B H S^2 d, halved when causal; with varlen or a "
             "window 4 H d per visible pair), 2.5x for the backward.\n\n");
  fprintf(f, "Gain: the default's time over the winner's.  Confirmed: a winner other than the "
             "default timed again against it alone, and that timing's gain (a rejected one "
             "leaves the default the winner, itself the runner-up).\n\n");
  fprintf(f, "| case | winner | TFLOPS | runner-up | TFLOPS | default | TFLOPS | gain | confirmed |\n");
  fprintf(f, "|---|---|---|---|---|---|---|---|---|\n");
  for (int i = 0; i < n; i++) {
    const tcase *c = &cases[i];
    if (!c->done || c->winner < 0) continue;
    char w[FAGEN_VARIANT_NAME_MAX], r[FAGEN_VARIANT_NAME_MAX] = "-", d[FAGEN_VARIANT_NAME_MAX] = "-";
    fagen_variant_name(&c->cand[c->winner], w, sizeof w);
    if (c->runner_up >= 0) fagen_variant_name(&c->cand[c->runner_up], r, sizeof r);
    if (c->deflt >= 0) fagen_variant_name(&c->cand[c->deflt], d, sizeof d);
    double tw = tflops_of(c, c->ms[c->winner]);
    double tr = c->runner_up >= 0 ? tflops_of(c, c->ms[c->runner_up]) : 0;
    double td = c->deflt >= 0 ? tflops_of(c, c->ms[c->deflt]) : 0;
    char conf[48] = "-";
    if (c->confirm)
      snprintf(conf, sizeof conf, "%s x%.3f", c->confirm > 0 ? "yes" : "rejected", c->confirm_gain);
    fprintf(f, "| %s | %s | %.1f | %s | %.1f | %s | %.1f | %.3f | %s |\n", c->name, w, tw, r, tr, d,
            td, td > 0 ? tw / td : 0, conf);
  }
  fclose(f);
  fagen_op ops[MAX_OPS];
  const int n_ops = case_ops(o, &dc->target, ops);
  for (int k = 0; k < n_ops; k++)
    for (int fi = 0; fi < o->n_feature_sets; fi++)
      if (write_svg(o, cases, n, dc, ops[k], o->feature_sets[fi]) != 0) return -1;
  fprintf(stderr, "fagen-autotune: report in %s\n", o->report);
  return 0;
}

/* ---- modes ----------------------------------------------------------------- */

/* Whether op has a valid variant at head_dim for dtype and features on
 * target t (bwdwg has head_dim 64, 96, 128 and 256 only, and no features;
 * fwdwg of the features softcap and varlen only). */
static int op_has_head_dim(fagen_op op, const fagen_target *t, fagen_dtype dtype, int head_dim,
                           unsigned features) {
  fagen_variant base, *vs;
  memset(&base, 0, sizeof base);
  base.op = op, base.dtype = dtype, base.head_dim = head_dim, base.target = *t;
  base.features = features;
  size_t n = 0;
  int found = 0;
  if (fagen_variant_candidates(&base, NULL, 0, &n) == FAGEN_OK && n &&
      (vs = calloc(n, sizeof *vs)) != NULL) {
    if (fagen_variant_candidates(&base, vs, n, &n) == FAGEN_OK)
      for (size_t i = 0; i < n && !found; i++) found = fagen_variant_validate(&vs[i], NULL, 0) == FAGEN_OK;
    free(vs);
  }
  return found;
}

/* The cases for a target, in measuring order: feature set by feature set,
 * and the ops of one shape side by side, so that a --budget cut leaves every
 * family measured as far.  An op that has no kernel for a case's head_dim
 * or features has no case there. */
static int build_cases(const opts *o, const fagen_target *t, tcase **out) {
  fagen_op ops[MAX_OPS];
  const int n_ops = case_ops(o, t, ops);
  int cap = o->n_feature_sets * n_ops * o->n_dtypes * o->n_head_dims * o->n_causal * o->n_seqlens, n = 0;
  tcase *cs = calloc((size_t)(cap ? cap : 1), sizeof *cs);
  /* Case k in measuring order: the op varies fastest, then the bucket,
     causal, head_dim, dtype and, slowest, the feature set. */
  for (int k = 0; k < cap; k++) {
    int r = k;
    const int oi = r % n_ops;
    r /= n_ops;
    const int si = r % o->n_seqlens;
    r /= o->n_seqlens;
    const int ci = r % o->n_causal;
    r /= o->n_causal;
    const int di = r % o->n_head_dims;
    r /= o->n_head_dims;
    const int ti = r % o->n_dtypes, fi = r / o->n_dtypes;
    tcase *c = &cs[n];
    memset(c, 0, sizeof *c);
    c->op = ops[oi];
    c->dtype = o->dtypes[ti];
    c->head_dim = o->head_dims[di];
    c->causal = o->causal_modes[ci];
    c->seqlen = o->seqlens[si];
    c->features = o->feature_sets[fi];
    c->winner = c->runner_up = c->deflt = -1;
    case_name(c, c->name, sizeof c->name);
    if (o->cases && fnmatch(o->cases, c->name, 0) != 0) continue;
    if (!op_has_head_dim(c->op, t, c->dtype, c->head_dim, c->features)) continue;
    n++;
  }
  *out = cs;
  return n;
}

/* The heuristic's variant of `op` for a head_dim, dtype and causal on a target:
 * its entry in the default kernel set (the heuristic's tiles per op), else, as
 * the runtime does when those do not fit, the first valid candidate. */
static int op_default(fagen_op op, const fagen_variant *like, fagen_variant *out) {
  size_t n = 0;
  fagen_variant base = *like, *vs;
  base.op = op;
  int found = 0;
  if (fagen_default_variants(&like->target, 1, NULL, 0, &n) == FAGEN_OK &&
      (vs = calloc(n ? n : 1, sizeof *vs)) != NULL) {
    if (fagen_default_variants(&like->target, 1, vs, n, &n) == FAGEN_OK)
      for (size_t i = 0; i < n && !found; i++)
        if (vs[i].op == op && vs[i].head_dim == like->head_dim && vs[i].dtype == like->dtype &&
            vs[i].causal == like->causal)
          *out = vs[i], found = 1;
    free(vs);
  }
  if (!found && fagen_variant_candidates(&base, NULL, 0, &n) == FAGEN_OK &&
      (vs = calloc(n ? n : 1, sizeof *vs)) != NULL) {
    if (fagen_variant_candidates(&base, vs, n, &n) == FAGEN_OK)
      for (size_t i = 0; i < n && !found; i++)
        if (fagen_variant_validate(&vs[i], NULL, 0) == FAGEN_OK) *out = vs[i], found = 1;
    free(vs);
  }
  return found ? 0 : -1;
}

/* The heuristic's variant for a case on a device class (anonymous: no table):
 * what the case's plain call selects (fagen_attention_select, or the
 * backward's), if that is of the case's op (fwd and bwd below sm_90a, fwdwg
 * and bwdwg on sm_90a, bwddet everywhere); else (fwd and bwd cases on sm_90a,
 * the families of calls with features) the op's heuristic at the head_dim
 * the select chose.  On failure writes why to err. */
static int heuristic_of(fagen_ctx *ctx, const fagen_device_class *dc, const tcase *c,
                        fagen_variant *out, char *err, size_t size) {
  const tm_shape s = shape_of(c);
  fagen_variant sel;
  if (tm_select_heuristic(ctx, dc, &s, &sel, err, size) != 0) return -1;
  if (sel.op == c->op) {
    *out = sel;
    return 0;
  }
  if (op_default(c->op, &sel, out) == 0) {
    out->features = c->features; /* the default set is of plain calls: the same tiles */
    return 0;
  }
  char op[16], target[16];
  op_token(c->op, op, sizeof op);
  fagen_target_name(&dc->target, 1, target, sizeof target);
  snprintf(err, size, "no %s kernel for head_dim %d fits %s", op, sel.head_dim, target);
  return -1;
}

static int heuristic_table(const opts *o, fagen_ctx *ctx) {
  fagen_device_class dc;
  if (!o->device || fagen_device_class_parse(o->device, &dc) != FAGEN_OK) {
    fprintf(stderr, "fagen-autotune: --heuristic-table needs --device \"NAME,TARGET,SMS\", e.g. "
                    "\"NVIDIA A100-SXM4-80GB,sm_80,108\"\n");
    return 2;
  }
  if (!o->out) {
    fprintf(stderr, "fagen-autotune: --heuristic-table needs --out FILE\n");
    return 2;
  }
  tcase *cs;
  int n = build_cases(o, &dc.target, &cs);
  for (int i = 0; i < n; i++) {
    char why[512];
    if (heuristic_of(ctx, &dc, &cs[i], &cs[i].cand[0], why, sizeof why) != 0) {
      fprintf(stderr, "fagen-autotune: %s: %s\n", cs[i].name, why);
      free(cs);
      return 1;
    }
    cs[i].n_cand = 1;
    cs[i].winner = cs[i].deflt = 0;
    cs[i].runner_up = -1;
    cs[i].done = 1;
  }
  int rc = write_table(o, &dc, 0, cs, n, o->out) == 0 ? 0 : 1;
  if (!rc) fprintf(stderr, "fagen-autotune: wrote %d heuristic entries (not measured) to %s\n", n, o->out);
  free(cs);
  return rc;
}

/* Where v is in all[0..n) (n if absent). */
static size_t index_in(const fagen_variant *all, size_t n, const fagen_variant *v) {
  size_t j = 0;
  while (j < n && fg_variant_name_cmp(&all[j], v) != 0) j++;
  return j;
}

/* Screening: in each (op, dtype, head_dim, causal) group, every usable
 * candidate is timed briefly (1 warm-up and 3 calls) at the smallest bucket
 * and at the middle one; the o->screen fastest at either go on to every
 * bucket, with the default (which always does).  keep[j] marks them in all[].
 * On an H100 the whole space at every bucket (30 mma.sync backward
 * candidates per group) would have measured for half an hour. */
static void screen(const opts *o, fagen_ctx *ctx, tcase *cs, int n, const fagen_variant *all,
                   size_t n_all, const int *usable, tm_inputs *inputs, uint64_t *rng, int *keep,
                   double t0) {
  int *done = calloc((size_t)n, sizeof *done);
  const int buckets[2] = {o->seqlens[0], o->seqlens[o->n_seqlens / 2]};
  for (int i = 0; i < n && done; i++) {
    if (done[i]) continue;
    const tcase *c = &cs[i];
    for (int q = i; q < n; q++)
      done[q] |= cs[q].op == c->op && cs[q].dtype == c->dtype && cs[q].head_dim == c->head_dim &&
                 cs[q].causal == c->causal && cs[q].features == c->features;
    const fagen_variant *tv[MAX_CAND];
    size_t idx[MAX_CAND];
    int nt = 0;
    for (int k = 0; k < c->n_cand; k++) {
      const size_t j = index_in(all, n_all, &c->cand[k]);
      if (usable[j]) tv[nt] = &c->cand[k], idx[nt++] = j;
    }
    int all_go = o->screen == 0 || nt <= o->screen + 1 || (o->budget > 0 && now() - t0 > o->budget);
    for (int b = 0; b < 2 && !all_go; b++) {
      if (b == 1 && buckets[1] == buckets[0]) break;
      tm_shape sh = shape_of(c);
      sh.seqlen = buckets[b];
      double tms[MAX_CAND];
      char err[1024];
      if (tm_time(ctx, inputs, &sh, tv, nt, 1, 3, rng, tms, err, sizeof err) != 0) {
        fprintf(stderr, "fagen-autotune: screening %s: %s (every candidate goes on)\n", c->name, err);
        all_go = 1;
        break;
      }
      int taken[MAX_CAND] = {0};
      for (int r = 0; r < o->screen; r++) {
        int best = -1;
        for (int q = 0; q < nt; q++)
          if (!taken[q] && tms[q] > 0 &&
              (best < 0 || tms[q] < tms[best] ||
               (tms[q] == tms[best] && fg_variant_name_cmp(tv[q], tv[best]) < 0)))
            best = q;
        if (best < 0) break;
        taken[best] = 1;
        keep[idx[best]] = 1;
      }
    }
    if (all_go)
      for (int q = 0; q < nt; q++) keep[idx[q]] = 1;
  }
  free(done);
}

/* Confirmations of the run, for the summary. */
typedef struct confirm_tally {
  int kept, rejected;
  double seconds;
} confirm_tally;

/* A winner other than the default is timed again against the default alone
 * (the same warm-up and repeats, the two calls in turn, as fagen-bench
 * --vs-heuristic compares them) and kept only if tp_confirms.  Among many
 * candidates the least of the medians is biased low: a cell's noise alone
 * made a winner 5.5% faster than the default in a full tune on an H100
 * (fwdwg d256, S = 16384), which two later comparisons measured at 0.98 and
 * 1.00.  If the second timing fails, the default stays. */
static void confirm(const opts *o, fagen_ctx *ctx, tm_inputs *inputs, uint64_t *rng, tcase *c,
                    confirm_tally *tally) {
  const double t = now();
  const fagen_variant *pair[2] = {&c->cand[c->deflt], &c->cand[c->winner]};
  double ms[2] = {-1, -1};
  char err[1024];
  const tm_shape shape = shape_of(c);
  if (tm_time(ctx, inputs, &shape, pair, 2, o->warmup, o->reps, rng, ms, err, sizeof err) != 0)
    fprintf(stderr, "%sfagen-autotune: %s: confirming: %s (the default stays)\n",
            isatty(2) ? "\n" : "", c->name, err);
  c->confirm_gain = ms[0] > 0 && ms[1] > 0 ? ms[0] / ms[1] : 0;
  if (tp_confirms(ms[0], ms[1], o->margin)) {
    c->confirm = 1;
    tally->kept++;
  } else {
    c->confirm = -1;
    tally->rejected++;
    c->winner = c->deflt;
    c->runner_up = tp_fastest(c->cand, c->ms, c->n_cand, c->deflt);
  }
  tally->seconds += now() - t;
}

static int tune(const opts *o, fagen_ctx *ctx) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    fprintf(stderr, "fagen-autotune: no GPU here: tuning measures kernels on the GPU it tunes "
                    "for (--heuristic-table needs none)\n");
    return 1;
  }
  fagen_device_class dc;
  if (fagen_device_class_current(ctx, &dc) != FAGEN_OK) {
    fprintf(stderr, "fagen-autotune: %s\n", fagen_errmsg(ctx));
    return 1;
  }
  char out[1400], slug[200];
  fagen_device_class_slug(&dc, slug, sizeof slug);
  if (o->out)
    snprintf(out, sizeof out, "%s", o->out);
  else if (fagen_tune_table_path(ctx, &dc, out, sizeof out) != FAGEN_OK) {
    fprintf(stderr, "fagen-autotune: %s (or give --out)\n", fagen_errmsg(ctx));
    return 1;
  }
  const int tty = isatty(2);
  const double t0 = now();
  tcase *cs;
  int n = build_cases(o, &dc.target, &cs);
  if (n == 0) {
    fprintf(stderr, "fagen-autotune: no case matches --cases %s\n", o->cases ? o->cases : "");
    free(cs);
    return 1;
  }
  fprintf(stderr, "fagen-autotune: %s (%s), %d cases, table %s\n", dc.name, slug, n, out);
  /* Candidates per case; compile every distinct one once. */
  fagen_variant *all = calloc((size_t)n * MAX_CAND, sizeof *all);
  int *ok = calloc((size_t)n * MAX_CAND, sizeof *ok);
  size_t n_all = 0, culled = 0, cap_space = 0;
  fagen_variant *cand = NULL; /* the case's whole axis table, valid or not */
  for (int i = 0; i < n; i++) {
    tcase *c = &cs[i];
    fagen_variant base;
    size_t nc = 0;
    char herr[512];
    if (heuristic_of(ctx, &dc, c, &base, herr, sizeof herr) != 0) {
      fprintf(stderr, "fagen-autotune: %s: %s\n", c->name, herr);
      return 1;
    }
    fagen_variant_candidates(&base, NULL, 0, &nc);
    if (nc > cap_space) {
      free(cand);
      cand = calloc(nc, sizeof *cand);
      cap_space = cand ? nc : 0;
    }
    if (fagen_variant_candidates(&base, cand, cap_space, &nc) != FAGEN_OK) nc = 0;
    c->cand[c->n_cand++] = base; /* the default is always a candidate */
    c->deflt = 0;
    for (size_t k = 0; k < nc; k++) {
      char name[FAGEN_VARIANT_NAME_MAX], why[512];
      fagen_variant_name(&cand[k], name, sizeof name);
      if (fg_variant_name_cmp(&cand[k], &base) == 0) continue;
      if (o->only && fnmatch(o->only, name, 0) != 0) continue;
      if (fagen_variant_validate(&cand[k], why, sizeof why) != FAGEN_OK) {
        if (o->verbose && c->seqlen == o->seqlens[0]) printf("# culled %s: %s\n", name, why);
        culled++;
        continue;
      }
      if (c->n_cand == MAX_CAND) {
        fprintf(stderr, "fagen-autotune: %s: more than %d valid candidates; raise MAX_CAND\n",
                c->name, MAX_CAND);
        return 1;
      }
      c->cand[c->n_cand++] = cand[k];
    }
    for (int k = 0; k < c->n_cand; k++) {
      if (index_in(all, n_all, &c->cand[k]) == n_all) all[n_all++] = c->cand[k];
    }
  }
  free(cand);
  fprintf(stderr, "fagen-autotune: %zu distinct candidates to compile (%zu dropped before "
                  "compiling%s)\n", n_all, culled, o->verbose ? "" : "; -v says why");
  /* The candidates compile in background threads, in case order, while the
     GPU checks, screens and measures the blocks of cases (one dtype,
     head_dim and causal: every op and bucket) whose candidates are ready. */
  compile_progress prog = {ctx, all, ok, n_all, tty, now(), now()};
  fg_compile_queue *cq = fg_compile_start(ctx, all, n_all, o->jobs, on_compiled, &prog);
  if (!cq) {
    fprintf(stderr, "fagen-autotune: no compile thread could start\n");
    return 1;
  }
  uint64_t rng = fg_rand_seed();
  int *agree = calloc(n_all, sizeof *agree);
  for (size_t j = 0; j < n_all; j++) agree[j] = -1; /* not checked yet */
  /* Every standard-grid cell has 16384 tokens x hidden 2048 elements per
     tensor: one set of random inputs per dtype serves all. */
  int measured = 0, skipped = 0, failed = 0;
  tm_inputs inputs;
  memset(&inputs, 0, sizeof inputs);
  int *usable = calloc(n_all, sizeof *usable), *keep = calloc(n_all, sizeof *keep);
  double op_seconds[MAX_OPS] = {0}; /* measuring time per op, for the summary */
  int op_cases[MAX_OPS] = {0};
  double t_wait = 0, t_check = 0, t_screen = 0, t_measure = 0;
  confirm_tally confirm_stats = {0, 0, 0};
  for (int g0 = 0, g1 = 0; g0 < n && !skipped && !failed; g0 = g1) {
    g1 = g0 + 1; /* the block: build_cases orders dtype, head_dim, causal, bucket, op */
    while (g1 < n && cs[g1].dtype == cs[g0].dtype && cs[g1].head_dim == cs[g0].head_dim &&
           cs[g1].causal == cs[g0].causal && cs[g1].features == cs[g0].features)
      g1++;
    double ta = now();
    for (int i = g0; i < g1; i++)
      for (int k = 0; k < cs[i].n_cand; k++)
        fg_compile_wait(cq, index_in(all, n_all, &cs[i].cand[k]));
    double tb = now();
    t_wait += tb - ta;
    /* Check each compiled candidate once, per (op, dtype, head_dim, causal). */
    for (int i = g0; i < g1 && !failed; i++) {
      tcase *c = &cs[i];
      int need = 0;
      for (int k = 0; k < c->n_cand; k++) {
        const size_t j = index_in(all, n_all, &c->cand[k]);
        need |= agree[j] < 0 && ok[j];
      }
      if (!need) continue;
      char err[1024];
      tm_check chk;
      const tm_shape shape = shape_of(c);
      if (tm_check_open(&chk, ctx, &shape, &c->cand[c->deflt], &rng, err, sizeof err) != 0) {
        fprintf(stderr, "%sfagen-autotune: the default of %s fails: %s\n", tty ? "\n" : "",
                c->name, err);
        tm_check_close(&chk);
        failed = 1;
        break;
      }
      for (int k = 0; k < c->n_cand; k++) {
        const size_t j = index_in(all, n_all, &c->cand[k]);
        if (agree[j] >= 0 || !ok[j]) continue;
        agree[j] = tm_check_agrees(&chk, ctx, &c->cand[k]);
        usable[j] = agree[j] == 1;
        if (!agree[j]) {
          char name[FAGEN_VARIANT_NAME_MAX];
          fagen_variant_name(&c->cand[k], name, sizeof name);
          fprintf(stderr, "%sfagen-autotune: %s disagrees with the default kernel: not used\n",
                  tty ? "\n" : "", name);
        }
      }
      tm_check_close(&chk);
    }
    if (failed) break;
    double tc = now();
    t_check += tc - tb;
    screen(o, ctx, cs + g0, g1 - g0, all, n_all, usable, &inputs, &rng, keep, t0);
    double td = now();
    t_screen += td - tc;
    for (int i = g0; i < g1; i++) {
      tcase *c = &cs[i];
      if (o->budget > 0 && now() - t0 > o->budget) {
        skipped = n - i;
        break;
      }
      const double t_case = now();
      char err[1024];
      /* The usable candidates, timed call by call in turn. */
      const fagen_variant *tv[MAX_CAND];
      int slot[MAX_CAND], nt = 0;
      for (int k = 0; k < c->n_cand; k++) {
        const size_t j = index_in(all, n_all, &c->cand[k]);
        c->ms[k] = -1;
        if (!usable[j] || (!keep[j] && k != c->deflt)) continue;
        slot[nt] = k;
        tv[nt++] = &c->cand[k];
      }
      double tms[MAX_CAND];
      const tm_shape shape = shape_of(c);
      if (tm_time(ctx, &inputs, &shape, tv, nt, o->warmup, o->reps, &rng, tms, err, sizeof err) != 0)
        fprintf(stderr, "%sfagen-autotune: %s: %s\n", tty ? "\n" : "", c->name, err);
      else
        for (int q = 0; q < nt; q++) c->ms[slot[q]] = tms[q];
      tp_pick(c->cand, c->ms, c->n_cand, c->deflt, o->margin, &c->winner, &c->runner_up);
      if (!o->no_confirm && c->winner >= 0 && c->deflt >= 0 && c->winner != c->deflt)
        confirm(o, ctx, &inputs, &rng, c, &confirm_stats);
      c->done = 1;
      measured++;
      for (int k = 0; k < MAX_OPS; k++)
        if (all_ops[k] == c->op) op_seconds[k] += now() - t_case, op_cases[k]++;
      /* The table so far, so that an interrupted run keeps what it measured. */
      if (write_table(o, &dc, 1, cs, n, out) != 0) {
        failed = 1;
        break;
      }
      /* ETA: this run's pace so far over the cases left. */
      double el = now() - t0, eta = el / (i + 1) * (n - i - 1);
      char w[FAGEN_VARIANT_NAME_MAX] = "-", r[FAGEN_VARIANT_NAME_MAX] = "-";
      if (c->winner >= 0) fagen_variant_name(&c->cand[c->winner], w, sizeof w);
      if (c->runner_up >= 0) fagen_variant_name(&c->cand[c->runner_up], r, sizeof r);
      double gain = c->winner >= 0 && c->ms[c->deflt] > 0 ? c->ms[c->deflt] / c->ms[c->winner] : 0;
      if (tty)
        fprintf(stderr,
                "\r[%3d/%d] %-26s %2d of %2d candidates  %-44s x%.3f  compiled %zu/%zu  %3.0fs, "
                "~%3.0fs left ",
                i + 1, n, c->name, nt, c->n_cand, w, gain, fg_compile_done(cq), n_all, el, eta);
      else if (c->confirm < 0)
        fprintf(stderr, "[%d/%d] %s: %d of %d candidates, winner %s (the default: the fastest, "
                        "%s, was x%.3f in the confirmation)\n",
                i + 1, n, c->name, nt, c->n_cand, w, r, c->confirm_gain);
      else
        fprintf(stderr, "[%d/%d] %s: %d of %d candidates, winner %s (x%.3f over the default%s)\n",
                i + 1, n, c->name, nt, c->n_cand, w, gain, c->confirm > 0 ? ", confirmed" : "");
    }
    t_measure += now() - td;
  }
  const size_t compiled = fg_compile_done(cq);
  const int jobs = fg_compile_finish(cq, skipped || failed);
  if (tty) fputc('\n', stderr);
  tm_inputs_free(&inputs);
  fprintf(stderr, "fagen-autotune: compiled %zu of %zu candidates in %.0f s with %d threads, "
                  "beside the GPU work\n",
          compiled, n_all, prog.t_last - prog.t0, jobs);
  int rc = failed ? 1 : write_table(o, &dc, 1, cs, n, out) == 0 ? 0 : 1;
  if (!rc)
    fprintf(stderr, "fagen-autotune: wrote %d entries to %s in %.0f s%s\n", measured, out,
            now() - t0, skipped ? " (--budget reached: the rest keep the heuristic)" : "");
  if (skipped) fprintf(stderr, "fagen-autotune: %d cases not measured\n", skipped);
  if (!o->no_confirm)
    fprintf(stderr, "fagen-autotune: confirmation: %d winners kept, %d rejected (the default "
                    "stays), %.0f s of the measuring\n",
            confirm_stats.kept, confirm_stats.rejected, confirm_stats.seconds);
  fprintf(stderr,
          "fagen-autotune: on the GPU %.0f s checking, %.0f s screening, %.0f s measuring, "
          "%.0f s waiting for compiles:",
          t_check, t_screen, t_measure, t_wait);
  for (int k = 0; k < MAX_OPS; k++)
    if (op_cases[k]) {
      char tok[16];
      op_token(all_ops[k], tok, sizeof tok);
      fprintf(stderr, " %s %d cases %.0f s;", tok, op_cases[k], op_seconds[k]);
    }
  fputc('\n', stderr);
  if (!rc && o->report) rc = write_report(o, cs, n, &dc) == 0 ? 0 : 1;
  free(all), free(ok), free(agree), free(usable), free(keep), free(cs);
  return rc;
}

int main(int argc, char **argv) {
  opts o;
  memset(&o, 0, sizeof o);
  const int dflt_d[] = {32, 64, 96, 128, 160, 192, 224, 256};
  const int dflt_s[] = {512, 1024, 2048, 4096, 8192, 16384};
  memcpy(o.head_dims, dflt_d, sizeof dflt_d);
  o.n_head_dims = 8;
  memcpy(o.seqlens, dflt_s, sizeof dflt_s);
  o.n_seqlens = 6;
  o.causal_modes[0] = 0, o.causal_modes[1] = 1, o.n_causal = 2;
  o.dtypes[0] = FAGEN_DTYPE_BF16, o.dtypes[1] = FAGEN_DTYPE_FP16, o.n_dtypes = 2;
  o.reps = 10, o.warmup = 2, o.margin = 0.02, o.screen = 4;
  o.n_feature_sets = 1; /* plain calls only */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE(var) (next ? ((var) = next, i++, 1) : 0)
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
      o.verbose = 1;
    } else if (!strcmp(a, "--no-confirm")) {
      o.no_confirm = 1;
    } else if (!strcmp(a, "--heuristic-table")) {
      o.heuristic_table = 1;
    } else if (!strcmp(a, "--out")) {
      if (!TAKE(o.out)) goto bad;
    } else if (!strcmp(a, "--report")) {
      if (!TAKE(o.report)) goto bad;
    } else if (!strcmp(a, "--device")) {
      if (!TAKE(o.device)) goto bad;
    } else if (!strcmp(a, "--cases")) {
      if (!TAKE(o.cases)) goto bad;
    } else if (!strcmp(a, "--only")) {
      if (!TAKE(o.only)) goto bad;
    } else if (!strcmp(a, "--ops") && next) {
      if (parse_ops(next, &o) != 0) goto bad;
      i++;
    } else if (!strcmp(a, "--features") && next) {
      if (parse_features(next, &o) != 0) goto bad;
      i++;
    } else if (!strcmp(a, "--head-dims") && next) {
      if ((o.n_head_dims = fg_parse_int_list(next, o.head_dims, MAX_LIST)) <= 0) goto bad;
      i++;
    } else if (!strcmp(a, "--seqlens") && next) {
      if ((o.n_seqlens = fg_parse_int_list(next, o.seqlens, MAX_LIST)) <= 0) goto bad;
      i++;
    } else if (!strcmp(a, "--dtypes") && next) {
      o.n_dtypes = 0;
      if (strstr(next, "bf16")) o.dtypes[o.n_dtypes++] = FAGEN_DTYPE_BF16;
      if (strstr(next, "fp16")) o.dtypes[o.n_dtypes++] = FAGEN_DTYPE_FP16;
      if (!o.n_dtypes) goto bad;
      i++;
    } else if (!strcmp(a, "--causal") && next) {
      if (!strcmp(next, "no")) o.causal_modes[0] = 0, o.n_causal = 1;
      else if (!strcmp(next, "yes")) o.causal_modes[0] = 1, o.n_causal = 1;
      else if (strcmp(next, "both") != 0) goto bad;
      i++;
    } else if (!strcmp(a, "--budget") && next) {
      o.budget = atof(next), i++;
      if (o.budget <= 0) goto bad;
    } else if (!strcmp(a, "--margin") && next) {
      o.margin = atof(next) / 100.0, i++;
      if (o.margin < 0 || o.margin > 1) goto bad;
    } else if (!strcmp(a, "--screen") && next) {
      char *end;
      long k = strtol(next, &end, 10);
      if (*end || end == next || k < 0 || k > MAX_CAND) goto bad;
      o.screen = (int)k, i++;
    } else if (!strcmp(a, "--jobs") && next) {
      o.jobs = atoi(next), i++;
      if (o.jobs < 1) goto bad;
    } else if (!strcmp(a, "--reps") && next) {
      o.reps = atoi(next), i++;
      if (o.reps < 1 || o.reps > 1000) goto bad;
    } else if (!strcmp(a, "--warmup") && next) {
      o.warmup = atoi(next), i++;
      if (o.warmup < 0 || o.warmup > 100) goto bad;
    } else {
      fprintf(stderr, "fagen-autotune: unknown or incomplete option '%s'\n", a);
      goto bad;
    }
#undef TAKE
  }
  /* sequence lengths ascending, for buckets and charts */
  for (int i = 1; i < o.n_seqlens; i++)
    for (int j = i; j > 0 && o.seqlens[j] < o.seqlens[j - 1]; j--) {
      int t = o.seqlens[j];
      o.seqlens[j] = o.seqlens[j - 1];
      o.seqlens[j - 1] = t;
    }
  fagen_ctx *ctx;
  if (fagen_ctx_create(&ctx) != FAGEN_OK) {
    fprintf(stderr, "fagen-autotune: %s\n", fagen_last_error());
    return 1;
  }
  int rc = o.heuristic_table ? heuristic_table(&o, ctx) : tune(&o, ctx);
  fagen_ctx_destroy(ctx);
  return rc;
bad:
  usage(stderr);
  return 2;
}
