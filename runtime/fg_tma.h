/* fg_tma: the TMA tensor maps that the wgmma kernels take as their second,
 * __grid_constant__ parameter: the forward (templates/fwd_sm90.cu.tpl) those
 * of q, k, v and o, the backward (templates/bwd_sm90.cu.tpl) those of q, k, v
 * and dout, four maps in that order either way, and then the backward's two
 * into its workspace (the row statistics and the dQ accumulator).  Each tensor is described as
 * a 4-D tensor [batch][heads][seq][head_dim] with the call's strides; a box
 * is 64 columns (one 128-byte swizzled slice) by the kernel's block_q rows
 * (q, dout) or block_kv rows (k, v) (o: 64 rows, one consumer warpgroup's).
 * Reads past the sequence or head_dim come back as zeros; writes there are
 * dropped. */
#ifndef FG_TMA_H
#define FG_TMA_H

#include "fg_cuda.h"
#include "fg_kernel_abi.h"

typedef struct fg_tmaps {
  CUtensorMap q, k, v, o;
} fg_tmaps;

/* The backward's maps: the same layout, dout where the forward has o. */
typedef struct fg_tmaps_bwd {
  CUtensorMap q, k, v, dout;
  CUtensorMap stats;  /* fg_bwd_params.stats: fp32 [batch * heads_q * 2][stats_ld] */
  CUtensorMap dq_acc; /* fg_bwd_params.dq_acc: fp32 [batch * heads_q][seqlen_q][D] */
} fg_tmaps_bwd;
_Static_assert(sizeof(fg_tmaps) == 512 && sizeof(fg_tmaps_bwd) == 768,
               "the kernels take four (forward) or six (backward) 128-byte CUtensorMaps");

/* 1 if the driver can describe the call's q, k, v and o (strides, after the
 * contiguous default, below 2^40 bytes and not zero along an axis longer than
 * 1); the wgmma kernel is selected only then. */
int fg_tma_fwd_fits(const fagen_attention_args *a);

/* Encodes the maps of a forward call whose parameter block is p (strides in
 * elements, as the kernel uses them) for variant v.  Returns FAGEN_OK or
 * FAGEN_E_CUDA when the driver cannot describe a layout (e.g. a zero stride
 * along an axis longer than 1): the caller then runs the mma.sync kernel. */
fagen_status fg_tma_fwd_maps(const fg_cuda_api *cu, const fg_fwd_params *p, const fagen_variant *v,
                             fagen_dtype dtype, fg_tmaps *out, fg_err *err);

/* 1 if the driver can describe the backward call's q, k, v and dout (the
 * rule of fg_tma_fwd_fits); the wgmma backward is selected only then. */
int fg_tma_bwd_fits(const fagen_attention_bwd_args *a);

/* Encodes the maps of q, k, v and dout of a backward call whose parameter
 * block is p, for variant v (op FAGEN_OP_BWD_WGMMA).  Returns FAGEN_OK or
 * FAGEN_E_CUDA when the driver cannot describe a layout: the caller then runs
 * the mma.sync backward. */
fagen_status fg_tma_bwd_maps(const fg_cuda_api *cu, const fg_bwd_params *p, const fagen_variant *v,
                             fagen_dtype dtype, fg_tmaps_bwd *out, fg_err *err);

/* Encodes the maps into the workspace once p.stats, p.stats_ld and p.dq_acc
 * are set: out->stats (rows of stats_ld floats, a box of block_q of them)
 * and out->dq_acc (rows of the compiled head_dim v->head_dim floats, per
 * (batch, head) seqlen_q of them; a box of 32 columns, one 128-byte
 * swizzled slice, by block_q rows, which the kernel adds to dQacc).
 * FAGEN_OK or FAGEN_E_CUDA. */
fagen_status fg_tma_bwd_workspace_maps(const fg_cuda_api *cu, const fg_bwd_params *p,
                                       const fagen_variant *v, fg_tmaps_bwd *out, fg_err *err);

#endif
