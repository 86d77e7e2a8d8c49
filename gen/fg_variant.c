#include "fg_variant.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- targets ------------------------------------------------------------ */

/* Shared memory a block may opt into, per target (CUDA programming guide,
 * "compute capabilities" table).  fagen's kernels need sm_80 features
 * (cp.async, bf16 mma), so nothing older is listed. */
static const struct fg_target_info {
  int arch;
  int specific_allowed; /* an "a" target exists */
  int smem_optin;       /* bytes */
} fg_targets[] = {
    {80, 0, 166912}, {86, 0, 101376}, {87, 0, 166912}, {89, 0, 101376},  {90, 1, 232448},
    {100, 1, 232448}, {103, 1, 232448}, {120, 1, 101376}, {121, 1, 101376},
};

static const struct fg_target_info *fg_target_lookup(const fagen_target *t) {
  for (size_t i = 0; i < FG_ARRAY_LEN(fg_targets); i++)
    if (fg_targets[i].arch == t->arch) {
      if (t->arch_specific != 0 && (t->arch_specific != 1 || !fg_targets[i].specific_allowed))
        return NULL;
      return &fg_targets[i];
    }
  return NULL;
}

int fg_target_supported(const fagen_target *t) { return t && fg_target_lookup(t) != NULL; }

int fg_target_smem_limit(const fagen_target *t) {
  const struct fg_target_info *info = fg_target_lookup(t);
  return info ? info->smem_optin : 0;
}

FAGEN_API fagen_status fagen_target_name(const fagen_target *t, int with_underscore, char *buf,
                                         size_t size) {
  if (!t || !buf) return FAGEN_E_NULL_POINTER;
  int n = snprintf(buf, size, "sm%s%d%s", with_underscore ? "_" : "", t->arch,
                   t->arch_specific ? "a" : "");
  if (n < 0 || (size_t)n >= size) return FAGEN_E_BUFFER_TOO_SMALL;
  return FAGEN_OK;
}

/* Parses a decimal integer without sign or leading zeros from s[0..len). */
static int fg_parse_uint(const char *s, size_t len, int *out) {
  if (len == 0 || len > 9) return 0;
  if (s[0] == '0' && len > 1) return 0;
  int v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 1;
}

/* "sm80", "sm_80", "sm90a", "sm_90a" (sep_optional) or "sm80"/"sm90a" only. */
static int fg_parse_target_token(const char *s, size_t len, int underscore_ok, fagen_target *out) {
  if (len < 3 || s[0] != 's' || s[1] != 'm') return 0;
  size_t i = 2;
  if (underscore_ok && i < len && s[i] == '_') i++;
  size_t end = len;
  int specific = 0;
  if (end > i && s[end - 1] == 'a') {
    specific = 1;
    end--;
  }
  int arch;
  if (!fg_parse_uint(s + i, end - i, &arch)) return 0;
  out->arch = arch;
  out->arch_specific = specific;
  return 1;
}

FAGEN_API fagen_status fagen_target_parse(const char *token, fagen_target *out) {
  if (!token || !out) {
    fg_set_last_error(FAGEN_E_NULL_POINTER, "fagen_target_parse: NULL argument");
    return FAGEN_E_NULL_POINTER;
  }
  fagen_target t;
  char msg[256];
  if (!fg_parse_target_token(token, strlen(token), 1, &t)) {
    snprintf(msg, sizeof msg, "'%.64s' is not a target; expected a form like sm_80 or sm_90a",
             token);
    fg_set_last_error(FAGEN_E_INVALID_ARGUMENT, msg);
    return FAGEN_E_INVALID_ARGUMENT;
  }
  if (!fg_target_supported(&t)) {
    snprintf(msg, sizeof msg,
             "target '%.64s' is not supported (fagen supports sm_80, sm_86, sm_87, sm_89, "
             "sm_90, sm_90a, sm_100, sm_100a, sm_103, sm_103a, sm_120, sm_120a, sm_121, "
             "sm_121a)",
             token);
    fg_set_last_error(FAGEN_E_INVALID_ARGUMENT, msg);
    return FAGEN_E_INVALID_ARGUMENT;
  }
  *out = t;
  return FAGEN_OK;
}

/* ---- the axis table ----------------------------------------------------- */

/* Head dimensions that are compiled; any other multiple of 8 up to 256 is
 * served by the next size up (fg_head_dim_bucket). */
static const int fg_head_dims[] = {32, 64, 96, 128, 160, 192, 224, 256};

int fg_head_dim_bucket(int d) {
  for (size_t i = 0; i < FG_ARRAY_LEN(fg_head_dims); i++)
    if (d <= fg_head_dims[i]) return fg_head_dims[i];
  return 0;
}

#define FG_MAX_AXIS 10

/* One row per kernel family: its op, template, the tile candidates the tuner
 * and `fagen list --space` enumerate, and the template's constraints. */
typedef struct fg_family {
  fagen_op op;
  const char *op_token;
  const char *template_name;
  int block_q[FG_MAX_AXIS];
  int block_kv[FG_MAX_AXIS];
  int warps[FG_MAX_AXIS];
  int stages[FG_MAX_AXIS];
  int pingpong;   /* the family has the pingpong knob (0 and 1 in the space) */
  int prefetch_q; /* the family has the prefetch_q knob (0 and 1 in the space) */
  /* Template-specific constraints and resource model. */
  fagen_status (*check)(const fagen_variant *v, fg_resources *res, fg_err *err);
  void (*default_tiles)(fagen_variant *v);
} fg_family;

/* fwd_sm80.cu.tpl (mma.sync, FlashAttention-2 scheme): each warp owns 16 * MT
 * query rows (MT = 1 or 2).  Shared memory: the Q tile and `stages` K and V
 * tiles (1: V(j) streams in during S = QK^T, K(j-1) during PV; 2: a ring of
 * two, each tile copied in a whole tile ahead).
 * Registers per thread: the O accumulators (4 * MT * head_dim / 8), the S
 * accumulators (4 * MT * block_kv / 8) and ~48 for fragments, addresses and
 * softmax state; past 255 the compiler would spill. */
static fagen_status fg_check_fwd_sm80(const fagen_variant *v, fg_resources *res, fg_err *err) {
  if (v->warps != 4 && v->warps != 8)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "warps=%d: the sm80 forward kernel uses 4 or 8",
                   v->warps);
  int rows = 16 * v->warps;
  if (v->block_q % rows != 0 || (v->block_q / rows != 1 && v->block_q / rows != 2))
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_q=%d must be 16 x warps x 1 or 2 (%d or %d with %d warps)", v->block_q,
                   rows, 2 * rows, v->warps);
  if (v->block_kv % 16 != 0 || v->block_kv < 16 || v->block_kv > 256)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_kv=%d is not a multiple of 16 in [16, 256] (the k of mma.m16n8k16)",
                   v->block_kv);
  if (v->stages != 1 && v->stages != 2)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "stages=%d: the sm80 forward kernel has 1 or 2 K/V buffers", v->stages);
  if ((v->features & FAGEN_FEATURE_DROPOUT) && v->block_kv % 32 != 0)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_kv=%d: dropout draws its mask 32 keys at a time (a multiple of 32)",
                   v->block_kv);
  int mt = v->block_q / rows;
  long smem = (long)(v->block_q + 2 * v->stages * v->block_kv) * v->head_dim * 2;
  int regs = 4 * mt * (v->head_dim / 8) + 4 * mt * (v->block_kv / 8) + 48;
  if (res) {
    res->threads = v->warps * 32;
    res->smem_bytes = (int)smem;
    res->regs_estimate = regs;
  }
  return FAGEN_OK;
}

/* The heuristic, used when no tuning table has an entry: FlashAttention-2's
 * published forward tiles (flash_fwd_launch_template.h; 4 warps unless said,
 * one K and one V buffer):
 *   head_dim 32, 64         128 x 128
 *   head_dim 96             128 x 64; causal 64 x 64 on small-smem parts
 *   head_dim 128            128 x 64; on small-smem parts 128 x 32, causal 64 x 64
 *   head_dim 160, 192, 224  128 x 64 with 8 warps (FlashAttention-2 has 192 only)
 *   head_dim 256            128 x 64 with 8 warps where a block may use 128 KB
 *                           but an SM has less than 192 KB (sm_80, sm_87: the
 *                           A100), else 64 x 64
 * "Small-smem parts" (sm_86, sm_89, sm_120, sm_121: 99 KB per block) stand for
 * FlashAttention-2's sm8x test.  One deviation: causal head_dim 64 below sm_90
 * uses 128 x 64, because NVRTC's sm_80 build of our 128 x 128 causal tile
 * spills 148 bytes.  A choice that does not fit the target falls back to
 * 64 x 64 with 4 warps (fg_default_tiles).  Measured choices live in the
 * tuning tables (tables/). */
static void fg_default_fwd_sm80(fagen_variant *v) {
  const int d = v->head_dim, causal = v->causal, arch = v->target.arch;
  const int small_smem = fg_target_smem_limit(&v->target) < 150 * 1024;
  v->warps = 4;
  v->stages = 1;
  v->block_q = 128;
  v->block_kv = 64;
  if (d <= 64) {
    v->block_kv = (causal && arch < 90) ? 64 : 128;
  } else if (d <= 96) {
    if (small_smem && causal) v->block_q = 64;
  } else if (d <= 128) {
    if (small_smem) {
      if (causal)
        v->block_q = 64;
      else
        v->block_kv = 32;
    }
  } else if (d < 256) {
    v->warps = 8;
  } else if (!small_smem && (arch == 80 || arch == 87)) {
    v->warps = 8;
  } else {
    v->block_q = 64;
  }
}

/* Warps along M of a warp layout of an [m][n] product over w warps: each warp
 * tile must be whole 16 x 16 blocks; of the layouts that fit, the one whose
 * warp tile is closest to square (fewest ldmatrix loads per mma), ties to
 * fewer warps along M.  0 if none fits. */
static int fg_bwd_wm(int w, int m, int n) {
  int best = 0, best_cost = 0;
  for (int wm = 1; wm <= w; wm++) {
    if (w % wm != 0) continue;
    int wn = w / wm;
    if (m % (16 * wm) != 0 || n % (16 * wn) != 0) continue;
    int cost = m / wm / 16 + n / wn / 16;
    if (!best || cost < best_cost) {
      best = wm;
      best_cost = cost;
    }
  }
  return best;
}

/* bwd_sm80.cu.tpl (mma.sync, FlashAttention-2 scheme; see the template).
 * Main kernel, per CTA: K and V tiles [block_kv][head_dim], `stages` buffers
 * each of Q and dO [block_q][head_dim] and of the rows' LSE and D (fp32),
 * P and dS [block_q][block_kv].
 * Registers: the dK and dV accumulators (2 x block_kv x head_dim / threads),
 * S and dP (2 x block_q x block_kv / threads) and ~40 for fragments,
 * addresses and row state.  The deterministic dQ kernel is fixed (4 warps,
 * 64 rows, K/V tiles of 64 keys up to head_dim 128, else 32) and takes two
 * K/V buffers where they fit. */
static fagen_status fg_check_bwd_sm80(const fagen_variant *v, fg_resources *res, fg_err *err) {
  const int d = v->head_dim, bq = v->block_q, bk = v->block_kv, w = v->warps;
  if (w != 4 && w != 8)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "warps=%d: the sm80 backward kernel uses 4 or 8",
                   w);
  if (bq % 16 != 0 || bq < 16 || bq > 128)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "block_q=%d is not a multiple of 16 in [16, 128]",
                   bq);
  if (bk % FG_BWD_MIN_BLOCK_KV != 0 || bk < FG_BWD_MIN_BLOCK_KV || bk > 128)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "block_kv=%d is not a multiple of 32 in [32, 128]",
                   bk);
  if (v->stages != 1 && v->stages != 2)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "stages=%d: the sm80 backward kernel has 1 or 2 Q/dO buffers", v->stages);
  int s_wm = fg_bwd_wm(w, bq, bk), kv_wm = fg_bwd_wm(w, bk, d), q_wm = fg_bwd_wm(w, bq, d);
  if (!s_wm || !kv_wm || !q_wm)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "%d warps cannot tile [%d x %d], [%d x %d] and [%d x %d] in 16 x 16 blocks", w,
                   bq, bk, bk, d, bq, d);
  long smem = 2L * bk * d * 2 + 2L * v->stages * bq * d * 2 + 2L * bq * bk * 2 +
              2L * v->stages * bq * 4;
  int threads = 32 * w;
  int regs = 2 * bk * d / threads + 2 * bq * bk / threads + 40;
  int dq_bk = d <= 128 ? 64 : 32;
  int dq_fixed = 2 * FG_BWD_DQ_ROWS * d * 2, dq_tile = 2 * dq_bk * d * 2;
  int dq_stages = dq_fixed + 2 * dq_tile <= fg_target_smem_limit(&v->target) ? 2 : 1;
  if (v->op == FAGEN_OP_BWD_DET && dq_fixed + dq_tile > fg_target_smem_limit(&v->target))
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "the deterministic dQ kernel needs %d bytes of shared memory", dq_fixed + dq_tile);
  if (res) {
    res->threads = threads;
    res->smem_bytes = (int)smem;
    res->regs_estimate = regs;
    res->bwd_s_wm = s_wm;
    res->bwd_kv_wm = kv_wm;
    res->bwd_q_wm = q_wm;
    res->bwd_dq_stages = dq_stages;
    res->bwd_dq_smem = dq_fixed + dq_stages * dq_tile;
    res->aux_threads = FG_BWD_AUX_THREADS;
  }
  return FAGEN_OK;
}

/* Backward heuristic: FlashAttention-2's published backward tiles for sm_80
 * and sm_90 (flash_bwd_launch_template.h; 8 warps): head_dim <= 64 128 x 128,
 * 96 and 128 64 x 128, above 64 x 64.  Two Q/dO buffers where they fit the
 * target, else one; the candidates search covers the rest.  One measured
 * deviation: the non-deterministic head_dim 64 backward on sm_90 takes 32 x
 * 128 with 4 warps, which an H100 ran 1.03-1.10x faster than 128 x 128 on
 * every cell tried (S 2048 and 8192, causal and not; `fagen-bench --mode bwd
 * --candidates`), while at head_dim 128 and 256 the published tiles won. */
static void fg_default_bwd_sm80(fagen_variant *v) {
  const int d = v->head_dim;
  v->warps = 8;
  v->block_q = d <= 64 ? 128 : 64;
  v->block_kv = d <= 128 ? 128 : 64;
  v->stages = 2;
  if (v->op == FAGEN_OP_BWD && d == 64 && v->target.arch == 90) {
    v->warps = 4;
    v->block_q = 32;
  }
  if (fg_variant_check(v, NULL, NULL) != FAGEN_OK) v->stages = 1;
}

/* fwd_sm90.cu.tpl (Hopper: wgmma, TMA, warp specialization): one producer
 * warpgroup and block_q / 64 consumer warpgroups (warps = 4 x (1 + block_q /
 * 64)).  Shared memory: Q and `stages` K and V tiles, each stored as whole
 * 64-column slices (head_dim rounded up to 64), plus 1024 bytes to align the
 * tiles to the swizzle pattern.  Registers: setmaxnreg leaves the producer
 * 24 and gives each consumer thread the rest (at most 240); a consumer holds
 * the O accumulators (head_dim / 2), S (block_kv / 2), P (block_kv / 4) and
 * ~40 for addresses and softmax state. */
static int fg_sm90_consumer_regs(int consumers) {
  int r = (65536 - 128 * 24) / (128 * consumers) / 8 * 8;
  return r < 240 ? r : 240;
}

/* What both Hopper families' resources share: warps x 32 threads, the
 * dynamic shared memory (fg_variant_check holds it to the target's limit),
 * the per-thread cap the launch bound gives (a thread never has more than
 * 255; setmaxnreg moves registers within threads x cap) and the consumers'
 * setmaxnreg budget. */
static void fg_sm90_resources(const fagen_variant *v, long smem, int consumer_regs,
                              fg_resources *res) {
  res->threads = v->warps * 32;
  res->smem_bytes = (int)smem;
  const int cap = 65536 / res->threads / 8 * 8;
  res->regs_estimate = cap < 255 ? cap : 255;
  res->fwd_consumer_regs = consumer_regs;
}

static fagen_status fg_check_fwd_sm90(const fagen_variant *v, fg_resources *res, fg_err *err) {
  if (v->target.arch != 90 || !v->target.arch_specific)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "the wgmma forward kernel runs on sm_90a only (wgmma, setmaxnreg), not sm_%d%s",
                   v->target.arch, v->target.arch_specific ? "a" : "");
  if ((v->features & ~(unsigned)FG_FWD_WGMMA_FEATURES) != 0)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "features 0x%x: the wgmma forward kernel has softcap (0x%x) and sequence "
                   "lengths (0x%x) only",
                   v->features, (unsigned)FAGEN_FEATURE_SOFTCAP, (unsigned)FAGEN_FEATURE_VARLEN);
  if (v->warps % 4 != 0 || v->warps < 8 || v->warps > 16)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "warps=%d: the wgmma forward kernel has one producer and 1 to 3 consumer "
                   "warpgroups (8, 12 or 16 warps)",
                   v->warps);
  const int consumers = v->warps / 4 - 1;
  if (v->block_q != 64 * consumers)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_q=%d with %d warps: each of the %d consumer warpgroups owns 64 rows "
                   "(block_q %d)",
                   v->block_q, v->warps, consumers, 64 * consumers);
  if (v->block_kv % 16 != 0 || v->block_kv < 16 || v->block_kv > 256)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_kv=%d is not a multiple of 16 in [16, 256] (the n of wgmma.m64nNk16)",
                   v->block_kv);
  if (v->stages < 1 || v->stages > 4)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "stages=%d: the wgmma forward kernel has 1 to 4 K/V buffers", v->stages);
  if (v->pingpong && consumers < 2)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "pingpong with block_q=%d: taking turns needs 2 or 3 consumer warpgroups "
                   "(block_q 128 or 192)",
                   v->block_q);
  const int dp = (v->head_dim + 63) / 64 * 64;
  const long limit = fg_target_smem_limit(&v->target) - 256; /* 256: the static mbarriers */
  const long q_tile = (long)v->block_q * dp * 2;
  /* prefetch_q: a second Q tile, so that the producer loads the next output
     tile's Q while the consumers still work on this one. */
  long smem = (v->prefetch_q ? 2 : 1) * q_tile + (long)2 * v->stages * v->block_kv * dp * 2 + 1024;
  if (smem > limit)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "needs %ld bytes of shared memory per block (%s, %d stages of K and V) and "
                   "256 static, over the %d bytes sm_%d%s allows",
                   smem, v->prefetch_q ? "two Q tiles (prefetch_q)" : "a Q tile", v->stages,
                   fg_target_smem_limit(&v->target), v->target.arch,
                   v->target.arch_specific ? "a" : "");
  /* O goes out through its own shared tile (Q's size) and a TMA store above
     head_dim 64 where the tile still fits, else straight from the
     accumulators.  On an H100 the shared tile measured 1.00-1.07x at d128
     (most at short sequences) and 0.96-1.04x at d64.  Not with sequence
     lengths: a tile's store would write the rows past a packed sequence's
     end, which belong to the next one. */
  const long o_tile = q_tile;
  const int o_smem = v->head_dim > 64 && smem + o_tile <= limit && !(v->features & FAGEN_FEATURE_VARLEN);
  if (o_smem) smem += o_tile;
  int regs = v->head_dim / 2 + v->block_kv / 2 + v->block_kv / 4 + 40;
  int budget = fg_sm90_consumer_regs(consumers);
  if (regs > budget)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "a consumer thread needs about %d registers, over the %d that setmaxnreg can "
                   "give each of %d consumer warpgroups",
                   regs, budget, consumers);
  if (res) {
    fg_sm90_resources(v, smem, budget, res);
    res->fwd_o_smem = o_smem;
  }
  return FAGEN_OK;
}

/* Hopper forward heuristic: two consumer warpgroups (128 query rows) and two
 * K/V buffers; 128 keys per tile up to head_dim 128 (FlashAttention-3's
 * published d128 tile), then fewer as the O accumulators grow (d256: 80).
 * Ping-pong above head_dim 64: on an H100 it measured 0.94-0.99x at d64
 * (the products are short next to the softmax) and 0.98-1.04x at d128-256. */
static void fg_default_fwd_sm90(fagen_variant *v) {
  const int d = v->head_dim;
  v->warps = 12;
  v->block_q = 128;
  v->stages = 2;
  v->block_kv = d <= 128 ? 128 : d <= 192 ? 96 : 80;
  v->pingpong = d > 64;
}

/* bwd_sm90.cu.tpl (Hopper backward: wgmma, TMA, warp specialization; dQ by
 * fp32 atomics, as op bwd): one producer warpgroup and NC = warps / 4 - 1
 * consumer warpgroups; a CTA keeps K and V of block_kv = 64 x NC keys (64
 * rows, wgmma's M, per consumer: its dK and dV rows) and steps over the query
 * blocks of block_q rows.  dQ = dS K of a step is split among the consumers:
 * each of the QT = block_q / 64 row tiles goes to NC / QT consumers, each of
 * which takes DQN = head_dim x QT / NC of its columns, so NC must be a
 * multiple of QT and a share whole 64-column slices (or all of head_dim).
 * Shared memory: K, V and `stages` buffers of Q and dO (head_dim rounded up
 * to 64, as whole swizzled 64-column slices), two dS tiles [block_kv]
 * [block_q], the LSE and D rows of each stage (fp32), dQ's fp32 tile
 * [block_q][head_dim] (added to dQacc by TMA reductions each step; at d256
 * only with one stage, else per-thread reductions) and 1024 bytes to align
 * the tiles to the swizzle pattern.  Registers per consumer thread: the dK
 * and dV accumulators (head_dim / 2 each, i.e. head_dim), S and dP (block_q
 * / 2 each, i.e. block_q), the dQ share's accumulators (DQN / 2) and ~16 for
 * addresses and row state, within what setmaxnreg gives a consumer
 * (fg_sm90_consumer_regs).  (d128 with one consumer, 256 by this count,
 * compiled with its products serialized: ptxas C7512.)
 * head_dim 256 splits head_dim instead of the keys: 12 warps, 64 x 64
 * tiles, both consumers on the same 64 keys, each with half of dK's and
 * dV's columns (128 registers) and half of dQ's; S^T and dP^T (one each,
 * block_q / 2) and P^T and dS^T pass through two more tiles [block_kv]
 * [block_q] in shared memory. */
static fagen_status fg_check_bwd_sm90(const fagen_variant *v, fg_resources *res, fg_err *err) {
  const int d = v->head_dim, bq = v->block_q, bk = v->block_kv;
  if (v->target.arch != 90 || !v->target.arch_specific)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "the wgmma backward kernel runs on sm_90a only (wgmma, setmaxnreg), not "
                   "sm_%d%s",
                   v->target.arch, v->target.arch_specific ? "a" : "");
  if (v->features != 0)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "features 0x%x: the wgmma backward kernel has no features (the bwd family "
                   "has them)",
                   v->features);
  if (d != 64 && d != 96 && d != 128 && d != 256)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "head_dim=%d: the wgmma backward has head_dim 64, 96, 128 or 256", d);
  const int split = d == 256;
  if (split && (v->warps != 12 || bk != 64 || bq != 64))
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "head_dim 256: the wgmma backward runs 12 warps on 64 x 64 tiles (two "
                   "consumers split head_dim), not %d warps, block_q=%d, block_kv=%d",
                   v->warps, bq, bk);
  if (v->warps != 8 && v->warps != 12)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "warps=%d: the wgmma backward kernel has one producer and 1 or 2 consumer "
                   "warpgroups (8 or 12 warps)",
                   v->warps);
  const int nc = v->warps / 4 - 1;
  if (!split && bk != 64 * nc)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_kv=%d with %d warps: each of the %d consumer warpgroups owns 64 keys "
                   "(block_kv %d)",
                   bk, v->warps, nc, 64 * nc);
  if (bq != 64 && bq != 128)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_q=%d: the wgmma backward steps over 64 or 128 query rows", bq);
  if (v->stages != 1 && v->stages != 2)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "stages=%d: the wgmma backward kernel has 1 or 2 Q/dO buffers", v->stages);
  const int qt = bq / 64;
  if (nc % qt != 0)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_q=%d with %d consumer warpgroup%s: each of dQ's %d 64-row tiles needs "
                   "a consumer of its own (block_q 128 needs 12 warps)",
                   bq, nc, nc == 1 ? "" : "s", qt);
  const int dqn = split ? d / 2 : d * qt / nc;
  if (dqn != d && dqn % 64 != 0)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_q=%d with %d consumer warpgroups leaves each a dQ share of %d columns; "
                   "a share must be whole 64-column slices or all %d",
                   bq, nc, dqn, d);
  const int regs = split ? d / 2 + bq / 2 + dqn / 2 + 16 : d + bq + dqn / 2 + 16;
  const int budget = fg_sm90_consumer_regs(nc);
  if (regs > budget)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "a consumer thread needs about %d registers, over the %d that setmaxnreg can "
                   "give each of %d consumer warpgroups",
                   regs, budget, nc);
  const int dp = (d + 63) / 64 * 64;
  const long smem = (2L * bk + 2L * v->stages * bq) * dp * 2 + (split ? 4L : 2L) * bk * bq * 2 +
                    2L * v->stages * bq * 4 + 1024 +
                    (!split || v->stages == 1 ? 4L * bq * d : 0L);
  if (res) {
    fg_sm90_resources(v, smem, budget, res);
    res->aux_threads = FG_BWD_AUX_THREADS;
  }
  return FAGEN_OK;
}

/* Hopper backward heuristic: the largest tiles the register model allows:
 * d64 128 x 128 (two consumers, one 64-row dQ tile each), d96 64 x 64 (one
 * consumer: two would leave 48-column dQ shares, and 128 query rows do not
 * fit the registers), d128 64 x 128 (two consumers, 64 dQ columns each); two
 * Q/dO buffers.  On an H100 they were the fastest candidates in every cell
 * of fagen-bench --mode bwd at d64 and d128, S 1024-16384, causal and not
 * (the runner-up 12-28% slower); d96 was not measured.  d256 has one
 * tiling, 64 x 64 on 12 warps, and one Q/dO buffer: that leaves room for
 * dQ's fp32 tile (TMA reductions), 1.14-1.25x over two
 * buffers with per-thread reductions (H100, S 512-16384, causal and not). */
static void fg_default_bwd_sm90(fagen_variant *v) {
  const int d = v->head_dim;
  v->stages = 2;
  if (d <= 64) {
    v->warps = 12;
    v->block_q = 128;
    v->block_kv = 128;
  } else if (d <= 96) {
    v->warps = 8;
    v->block_q = 64;
    v->block_kv = 64;
  } else if (d <= 128) {
    v->warps = 12;
    v->block_q = 64;
    v->block_kv = 128;
  } else {
    v->warps = 12;
    v->block_q = 64;
    v->block_kv = 64;
    v->stages = 1;
  }
}

static const fg_family fg_families[] = {
    {FAGEN_OP_FWD, "fwd", "fwd_sm80.cu.tpl", {64, 128, 256}, {32, 64, 128}, {4, 8}, {1, 2}, 0, 0,
     fg_check_fwd_sm80, fg_default_fwd_sm80},
    {FAGEN_OP_BWD, "bwd", "bwd_sm80.cu.tpl", {32, 64, 128}, {32, 64, 128}, {4, 8}, {1, 2}, 0, 0,
     fg_check_bwd_sm80, fg_default_bwd_sm80},
    {FAGEN_OP_BWD_DET, "bwddet", "bwd_sm80.cu.tpl", {32, 64, 128}, {32, 64, 128}, {4, 8}, {1, 2},
     0, 0, fg_check_bwd_sm80, fg_default_bwd_sm80},
    {FAGEN_OP_FWD_WGMMA, "fwdwg", "fwd_sm90.cu.tpl", {64, 128, 192}, {64, 80, 96, 112, 128, 160, 176, 192, 224},
     {8, 12, 16}, {2, 3}, 1, 1, fg_check_fwd_sm90, fg_default_fwd_sm90},
    {FAGEN_OP_BWD_WGMMA, "bwdwg", "bwd_sm90.cu.tpl", {64, 128}, {64, 128}, {8, 12}, {1, 2}, 0, 0,
     fg_check_bwd_sm90, fg_default_bwd_sm90},
};

static const fg_family *fg_family_of(fagen_op op) {
  for (size_t i = 0; i < FG_ARRAY_LEN(fg_families); i++)
    if (fg_families[i].op == op) return &fg_families[i];
  return NULL;
}

const char *fg_op_token(fagen_op op) {
  const fg_family *f = fg_family_of(op);
  return f ? f->op_token : NULL;
}

const char *fg_dtype_token(fagen_dtype dtype) {
  switch (dtype) {
    case FAGEN_DTYPE_FP16: return "fp16";
    case FAGEN_DTYPE_BF16: return "bf16";
  }
  return NULL;
}

const char *fg_variant_template(const fagen_variant *v) {
  const fg_family *f = fg_family_of(v->op);
  return f ? f->template_name : NULL;
}

/* ---- names -------------------------------------------------------------- */

/* Name tokens of the fagen_feature bits, bit 0 first (the order in names). */
static const char *const fg_feature_tokens[] = {"varlen", "window", "softcap", "alibi",
                                                "dropout"};

FAGEN_API fagen_status fagen_features_name(unsigned features, char *buf, size_t size) {
  if (!buf) {
    fg_set_last_error(FAGEN_E_NULL_POINTER, "fagen_features_name: NULL buffer");
    return FAGEN_E_NULL_POINTER;
  }
  if ((features & ~FAGEN_FEATURES_ALL) != 0) {
    char msg[128];
    snprintf(msg, sizeof msg, "fagen_features_name: features 0x%x has unknown bits (known: 0x%x)",
             features, (unsigned)FAGEN_FEATURES_ALL);
    fg_set_last_error(FAGEN_E_INVALID_ARGUMENT, msg);
    return FAGEN_E_INVALID_ARGUMENT;
  }
  size_t n = 0;
  if (size) buf[0] = '\0';
  for (size_t i = 0; i < FG_ARRAY_LEN(fg_feature_tokens); i++)
    if (features & (1u << i))
      n += (size_t)snprintf(buf + (n < size ? n : 0), n < size ? size - n : 0, "%s%s", n ? "+" : "",
                            fg_feature_tokens[i]);
  if (n >= size) {
    if (size) buf[0] = '\0';
    fg_set_last_error(FAGEN_E_BUFFER_TOO_SMALL, "fagen_features_name: buffer too small");
    return FAGEN_E_BUFFER_TOO_SMALL;
  }
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_variant_name(const fagen_variant *v, char *buf, size_t size) {
  if (!v || !buf) return FAGEN_E_NULL_POINTER;
  const char *op = fg_op_token(v->op);
  const char *dt = fg_dtype_token(v->dtype);
  if (!op || !dt || v->head_dim < 0 || v->block_q < 0 || v->block_kv < 0 || v->warps < 0 ||
      v->stages < 0 || (v->causal != 0 && v->causal != 1) || v->target.arch < 0 ||
      (v->pingpong != 0 && v->pingpong != 1) || (v->prefetch_q != 0 && v->prefetch_q != 1) ||
      (v->features & ~FAGEN_FEATURES_ALL) != 0 ||
      (v->target.arch_specific != 0 && v->target.arch_specific != 1)) {
    fg_set_last_error(FAGEN_E_INVALID_ARGUMENT,
                      "fagen_variant_name: a field is outside anything nameable");
    return FAGEN_E_INVALID_ARGUMENT;
  }
  char feats[64] = "";
  size_t fl = 0;
  for (size_t i = 0; i < FG_ARRAY_LEN(fg_feature_tokens); i++)
    if (v->features & (1u << i))
      fl += (size_t)snprintf(feats + fl, sizeof feats - fl, "_%s", fg_feature_tokens[i]);
  int n = snprintf(buf, size, "%s_d%d_bq%d_bk%d_w%d_s%d%s%s%s%s_%s_sm%d%s", op, v->head_dim,
                   v->block_q, v->block_kv, v->warps, v->stages, v->pingpong ? "_pp" : "",
                   v->prefetch_q ? "_pq" : "", v->causal ? "_causal" : "",
                   feats, dt, v->target.arch, v->target.arch_specific ? "a" : "");
  if (n < 0 || (size_t)n >= size) {
    if (size) buf[0] = '\0';
    fg_set_last_error(FAGEN_E_BUFFER_TOO_SMALL, "fagen_variant_name: buffer too small");
    return FAGEN_E_BUFFER_TOO_SMALL;
  }
  return FAGEN_OK;
}

/* Matches "<prefix><uint>" exactly. */
static int fg_token_num(const char *tok, size_t len, const char *prefix, int *out) {
  size_t pl = strlen(prefix);
  return len > pl && memcmp(tok, prefix, pl) == 0 && fg_parse_uint(tok + pl, len - pl, out);
}

static int fg_token_is(const char *tok, size_t len, const char *word) {
  return strlen(word) == len && memcmp(tok, word, len) == 0;
}

FAGEN_API fagen_status fagen_variant_parse(const char *name, fagen_variant *out) {
  if (!name || !out) {
    fg_set_last_error(FAGEN_E_NULL_POINTER, "fagen_variant_parse: NULL argument");
    return FAGEN_E_NULL_POINTER;
  }
  const char *tok[16];
  size_t len[16];
  size_t n = 0;
  const char *p = name;
  for (;;) {
    const char *e = strchr(p, '_');
    size_t l = e ? (size_t)(e - p) : strlen(p);
    if (n == FG_ARRAY_LEN(tok)) goto bad;
    tok[n] = p;
    len[n++] = l;
    if (!e) break;
    p = e + 1;
  }
  fagen_variant v;
  memset(&v, 0, sizeof v);
  size_t i = 0;
  int found = 0;
  for (size_t f = 0; f < FG_ARRAY_LEN(fg_families); f++)
    if (fg_token_is(tok[0], len[0], fg_families[f].op_token)) {
      v.op = fg_families[f].op;
      found = 1;
    }
  if (!found) goto bad;
  i = 1;
  if (n < 8 || n > 11 + FG_ARRAY_LEN(fg_feature_tokens)) goto bad;
  if (!fg_token_num(tok[i], len[i], "d", &v.head_dim)) goto bad;
  i++;
  if (!fg_token_num(tok[i], len[i], "bq", &v.block_q)) goto bad;
  i++;
  if (!fg_token_num(tok[i], len[i], "bk", &v.block_kv)) goto bad;
  i++;
  if (!fg_token_num(tok[i], len[i], "w", &v.warps)) goto bad;
  i++;
  if (!fg_token_num(tok[i], len[i], "s", &v.stages)) goto bad;
  i++;
  if (i + 2 < n && fg_token_is(tok[i], len[i], "pp")) {
    v.pingpong = 1;
    i++;
  }
  if (i + 2 < n && fg_token_is(tok[i], len[i], "pq")) {
    v.prefetch_q = 1;
    i++;
  }
  if (fg_token_is(tok[i], len[i], "causal")) {
    v.causal = 1;
    i++;
  }
  /* Feature tokens, each at most once, in bit order. */
  for (size_t f = 0; f < FG_ARRAY_LEN(fg_feature_tokens) && i + 2 < n; f++)
    if (fg_token_is(tok[i], len[i], fg_feature_tokens[f])) {
      v.features |= 1u << f;
      i++;
    }
  if (i + 2 != n) goto bad;
  if (fg_token_is(tok[i], len[i], "fp16"))
    v.dtype = FAGEN_DTYPE_FP16;
  else if (fg_token_is(tok[i], len[i], "bf16"))
    v.dtype = FAGEN_DTYPE_BF16;
  else
    goto bad;
  i++;
  if (!fg_parse_target_token(tok[i], len[i], 0, &v.target)) goto bad;
  *out = v;
  return FAGEN_OK;
bad: {
  char msg[256];
  snprintf(msg, sizeof msg,
           "'%.96s' is not a variant name (expected e.g. "
           "fwd_d128_bq128_bk64_w4_s2_causal_bf16_sm80)",
           name);
  fg_set_last_error(FAGEN_E_BAD_NAME, msg);
  return FAGEN_E_BAD_NAME;
}
}

/* ---- validity ----------------------------------------------------------- */

/* A 0/1 knob that only the fwdwg family has (pingpong, prefetch_q). */
static fagen_status fg_check_knob(const char *knob, int value, int family_has, const char *op,
                                  fg_err *err) {
  if (value != 0 && value != 1)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "%s=%d must be 0 or 1", knob, value);
  if (value && !family_has)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "%s: only the wgmma forward family (fwdwg) has that knob, not %s", knob, op);
  return FAGEN_OK;
}

fagen_status fg_variant_check(const fagen_variant *v, fg_resources *res, fg_err *err) {
  if (!v) return fg_fail(err, FAGEN_E_NULL_POINTER, "variant is NULL");
  const fg_family *fam = fg_family_of(v->op);
  if (!fam) return fg_fail(err, FAGEN_E_INVALID_VARIANT, "op %d is not a known operation", v->op);
  if (!fg_dtype_token(v->dtype))
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "dtype %d is not fp16 or bf16", v->dtype);
  if (v->causal != 0 && v->causal != 1)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "causal=%d must be 0 or 1", v->causal);
  if ((v->features & ~FAGEN_FEATURES_ALL) != 0)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "features 0x%x has unknown bits (known: 0x%x)",
                   v->features, FAGEN_FEATURES_ALL);
  if (!fg_target_supported(&v->target))
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "target sm_%d%s is not supported (need sm_80 or newer; 'a' only for "
                   "sm_90a, sm_100a, sm_103a, sm_120a, sm_121a)",
                   v->target.arch, v->target.arch_specific ? "a" : "");
  {
    int ok = 0;
    for (size_t i = 0; i < FG_ARRAY_LEN(fg_head_dims); i++) ok |= fg_head_dims[i] == v->head_dim;
    if (!ok)
      return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                     "head_dim=%d is not compiled; kernels exist for 32, 64, 96, 128, 160, "
                     "192, 224 and 256 (other multiples of 8 use the next size up)",
                     v->head_dim);
  }
  if (v->warps < 1 || v->warps > 32)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "warps=%d must be in [1, 32]", v->warps);
  if (v->block_q < 1 || v->block_q > 1024 || v->block_kv < 1 || v->block_kv > 1024)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "block_q=%d and block_kv=%d must be in [1, 1024]", v->block_q, v->block_kv);
  if (v->stages < 1 || v->stages > 8)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "stages=%d must be in [1, 8]", v->stages);
  fagen_status kst = fg_check_knob("pingpong", v->pingpong, fam->pingpong, fam->op_token, err);
  if (kst == FAGEN_OK)
    kst = fg_check_knob("prefetch_q", v->prefetch_q, fam->prefetch_q, fam->op_token, err);
  if (kst != FAGEN_OK) return kst;
  fg_resources r;
  memset(&r, 0, sizeof r);
  fagen_status st = fam->check(v, &r, err);
  if (st != FAGEN_OK) return st;
  int limit = fg_target_smem_limit(&v->target);
  if (r.smem_bytes > limit)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "needs %d bytes of shared memory per block, over the %d bytes sm_%d%s "
                   "allows",
                   r.smem_bytes, limit, v->target.arch, v->target.arch_specific ? "a" : "");
  if (r.threads > 1024)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT, "%d threads per block exceed 1024", r.threads);
  if (r.regs_estimate > 255)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "needs about %d registers per thread, over the limit of 255",
                   r.regs_estimate);
  if ((long)r.regs_estimate * r.threads > 65536)
    return fg_fail(err, FAGEN_E_INVALID_VARIANT,
                   "needs about %d registers x %d threads, over the 65536 registers of an SM",
                   r.regs_estimate, r.threads);
  if (res) *res = r;
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_variant_validate(const fagen_variant *v, char *reason, size_t size) {
  fg_err err;
  fagen_status st = fg_variant_check(v, NULL, &err);
  if (st != FAGEN_OK) {
    if (reason && size) fg_strlcpy(reason, err.msg, size);
    return fg_publish(&err);
  }
  if (reason && size) reason[0] = '\0';
  return FAGEN_OK;
}

/* ---- defaults and the tuning space -------------------------------------- */

void fg_default_tiles(fagen_variant *v) {
  const fg_family *f = fg_family_of(v->op);
  if (!f) return;
  v->pingpong = 0; /* the families that have them choose them */
  v->prefetch_q = 0;
  f->default_tiles(v);
  if (fg_variant_check(v, NULL, NULL) != FAGEN_OK) { /* does not fit this target */
    v->block_q = 64;
    v->block_kv = 64;
    v->warps = 4;
    v->stages = 1;
    v->pingpong = 0;
    v->prefetch_q = 0;
  }
}

int fg_variant_cmp(const fagen_variant *a, const fagen_variant *b) {
  const int ka[] = {a->target.arch, a->target.arch_specific, (int)a->op, a->head_dim,
                    (int)a->dtype, a->causal, (int)a->features, a->block_q, a->block_kv,
                    a->warps, a->stages, a->pingpong, a->prefetch_q};
  const int kb[] = {b->target.arch, b->target.arch_specific, (int)b->op, b->head_dim,
                    (int)b->dtype, b->causal, (int)b->features, b->block_q, b->block_kv,
                    b->warps, b->stages, b->pingpong, b->prefetch_q};
  for (size_t i = 0; i < FG_ARRAY_LEN(ka); i++)
    if (ka[i] != kb[i]) return ka[i] < kb[i] ? -1 : 1;
  return 0;
}

void fg_variant_space(const fagen_variant *base, fg_space_fn fn, void *user) {
  const fg_family *f = fg_family_of(base->op);
  if (!f) return;
  for (int a = 0; a < FG_MAX_AXIS && f->block_q[a]; a++)
    for (int b = 0; b < FG_MAX_AXIS && f->block_kv[b]; b++)
      for (int c = 0; c < FG_MAX_AXIS && f->warps[c]; c++)
        for (int d = 0; d < FG_MAX_AXIS && f->stages[d]; d++)
          for (int pp = 0; pp <= f->pingpong; pp++)
            for (int pq = 0; pq <= f->prefetch_q; pq++) {
              fagen_variant v = *base;
              v.block_q = f->block_q[a];
              v.block_kv = f->block_kv[b];
              v.warps = f->warps[c];
              v.stages = f->stages[d];
              v.pingpong = pp;
              v.prefetch_q = pq;
              fg_err err;
              fagen_status st = fg_variant_check(&v, NULL, &err);
              if (fn(user, &v, st == FAGEN_OK ? NULL : err.msg)) return;
            }
}

typedef struct fg_collect {
  fagen_variant *out;
  size_t capacity;
  size_t count;
} fg_collect;

static int fg_collect_one(void *user, const fagen_variant *v, const char *reason) {
  (void)reason;
  fg_collect *c = user;
  if (c->count < c->capacity) c->out[c->count] = *v;
  c->count++;
  return 0;
}

FAGEN_API fagen_status fagen_variant_candidates(const fagen_variant *base, fagen_variant *out,
                                                size_t capacity, size_t *count) {
  if (!base || !count || (capacity && !out)) {
    fg_set_last_error(FAGEN_E_NULL_POINTER, "fagen_variant_candidates: NULL argument");
    return FAGEN_E_NULL_POINTER;
  }
  if (!fg_family_of(base->op)) {
    fg_set_last_error(FAGEN_E_INVALID_ARGUMENT, "fagen_variant_candidates: unknown op");
    return FAGEN_E_INVALID_ARGUMENT;
  }
  fg_collect c = {out, capacity, 0};
  fg_variant_space(base, fg_collect_one, &c);
  *count = c.count;
  if (c.count > capacity && out) {
    fg_set_last_error(FAGEN_E_BUFFER_TOO_SMALL, "fagen_variant_candidates: buffer too small");
    return FAGEN_E_BUFFER_TOO_SMALL;
  }
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_default_variants(const fagen_target *targets, size_t n_targets,
                                              fagen_variant *out, size_t capacity,
                                              size_t *count) {
  if (!count || (n_targets && !targets) || (capacity && !out)) {
    fg_set_last_error(FAGEN_E_NULL_POINTER, "fagen_default_variants: NULL argument");
    return FAGEN_E_NULL_POINTER;
  }
  size_t total = 0;
  for (size_t t = 0; t < n_targets; t++) {
    if (!fg_target_supported(&targets[t])) {
      char msg[128];
      snprintf(msg, sizeof msg, "fagen_default_variants: target sm_%d%s is not supported",
               targets[t].arch, targets[t].arch_specific ? "a" : "");
      fg_set_last_error(FAGEN_E_INVALID_ARGUMENT, msg);
      return FAGEN_E_INVALID_ARGUMENT;
    }
    for (size_t fi = 0; fi < FG_ARRAY_LEN(fg_families); fi++)
      for (size_t d = 0; d < FG_ARRAY_LEN(fg_head_dims); d++)
        for (int dt = 0; dt < 2; dt++)
          for (int causal = 0; causal < 2; causal++) {
            fagen_variant v;
            memset(&v, 0, sizeof v);
            v.op = fg_families[fi].op;
            v.head_dim = fg_head_dims[d];
            v.dtype = dt ? FAGEN_DTYPE_BF16 : FAGEN_DTYPE_FP16;
            v.causal = causal;
            v.target = targets[t];
            fg_default_tiles(&v);
            /* A family that does not run on this target (wgmma below sm_90a). */
            if (fg_variant_check(&v, NULL, NULL) != FAGEN_OK) continue;
            if (total < capacity) out[total] = v;
            total++;
          }
  }
  *count = total;
  if (total > capacity && out) {
    fg_set_last_error(FAGEN_E_BUFFER_TOO_SMALL, "fagen_default_variants: buffer too small");
    return FAGEN_E_BUFFER_TOO_SMALL;
  }
  return FAGEN_OK;
}
