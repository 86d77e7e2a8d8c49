/* fg_tma: the TMA tensor maps that the wgmma forward kernel
 * (templates/fwd_sm90.cu.tpl) takes as its second, __grid_constant__
 * parameter.  Each of q, k, v and o is described as a 4-D tensor
 * [batch][heads][seq][head_dim] with the call's strides; a box is 64 columns
 * (one 128-byte swizzled slice) by the kernel's block_q or block_kv rows (o:
 * 64 rows, one consumer warpgroup's).  Reads past the sequence or head_dim
 * come back as zeros; writes there are dropped. */
#ifndef FG_TMA_H
#define FG_TMA_H

#include "fg_cuda.h"
#include "fg_kernel_abi.h"

typedef struct fg_tmaps {
  CUtensorMap q, k, v, o;
} fg_tmaps;

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

#endif
