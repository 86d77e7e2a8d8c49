/* fg_variant: the variant space — supported targets, the axis table of each
 * kernel family, names, the one validity predicate, default tile choices and
 * the default kernel set. */
#ifndef FG_VARIANT_H
#define FG_VARIANT_H

#include "fagen.h"
#include "fg_base.h"

/* Launch resources a valid variant needs; computed by the same code that
 * validates it, and handed to the template so that the kernel's own layout can
 * static_assert agreement. */
typedef struct fg_resources {
  int threads;       /* threads per block */
  int smem_bytes;    /* dynamic shared memory per block */
  int regs_estimate; /* registers per thread the budget check assumed */
  /* Backward only (templates/bwd_sm80.cu.tpl): warps along M of the warp
   * layouts of S/dP [block_q][block_kv], dK/dV [block_kv][head_dim] and
   * dQ [block_q][head_dim]; the deterministic dQ kernel's K/V buffers and
   * dynamic shared memory. */
  int bwd_s_wm, bwd_kv_wm, bwd_q_wm;
  int bwd_dq_stages, bwd_dq_smem;
  /* Both backward families: threads of the pre/post kernels. */
  int aux_threads;
  /* Both Hopper families (templates/fwd_sm90.cu.tpl, bwd_sm90.cu.tpl): the
   * registers setmaxnreg gives each consumer thread (the name predates the
   * Hopper backward).  Forward only: whether O leaves through a shared tile
   * and a TMA store (where the tile fits) or straight from the registers. */
  int fwd_consumer_regs, fwd_o_smem;
} fg_resources;

/* Launch shape of the backward's helper kernels (fixed by the template). */
#define FG_BWD_AUX_THREADS 256
#define FG_BWD_DQ_THREADS 128
#define FG_BWD_DQ_ROWS 64
#define FG_BWD_MIN_BLOCK_KV 32 /* the smallest block_kv fg_check_bwd_sm80 accepts */

/* The features the Hopper forward (op fwdwg) has: fg_check_fwd_sm90 accepts
 * these, and the runtime selects fwdwg for calls that use no others. */
#define FG_FWD_WGMMA_FEATURES (FAGEN_FEATURE_SOFTCAP | FAGEN_FEATURE_VARLEN)

/* The one validity predicate.  res may be NULL.  Returns FAGEN_OK or
 * FAGEN_E_INVALID_VARIANT (or FAGEN_E_NULL_POINTER) with the reason in err. */
fagen_status fg_variant_check(const fagen_variant *v, fg_resources *res, fg_err *err);

/* The template file (relative to templates/) that generates v's kernel. */
const char *fg_variant_template(const fagen_variant *v);

/* "fwd", ... for an op; NULL if unknown. */
const char *fg_op_token(fagen_op op);
/* "fp16" / "bf16"; NULL if unknown. */
const char *fg_dtype_token(fagen_dtype dtype);

/* Largest dynamic shared memory a block may opt into on target (0 if unknown). */
int fg_target_smem_limit(const fagen_target *t);
/* 1 if fagen can compile for this target. */
int fg_target_supported(const fagen_target *t);

/* Fills the tile fields (block_q, block_kv, warps, stages) of v with the
 * default choice for its op, head_dim, dtype, causal and target. */
void fg_default_tiles(fagen_variant *v);

/* Smallest instantiated head_dim >= d, or 0 if none (d > 256). */
int fg_head_dim_bucket(int d);

/* Enumerates the tile candidates of the case described by v (op, head_dim,
 * dtype, causal, target): calls fn for each, with reason NULL when valid.
 * Stops early when fn returns non-zero. */
typedef int (*fg_space_fn)(void *user, const fagen_variant *candidate, const char *reason);
void fg_variant_space(const fagen_variant *v, fg_space_fn fn, void *user);

/* Canonical order for variants (sort, ties). */
int fg_variant_cmp(const fagen_variant *a, const fagen_variant *b);

#endif
