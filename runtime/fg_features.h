/* fg_features: the masks and score modifiers of fagen_attention_features —
 * their validation, the feature bits a call needs, and the run-time values
 * the kernels read (shared by the forward and the backward). */
#ifndef FG_FEATURES_H
#define FG_FEATURES_H

#include "fagen.h"
#include "fg_base.h"
#include "fg_kernel_abi.h"

/* The FAGEN_FEATURE_* bits the values in f ask for. */
unsigned fg_features_bits(const fagen_attention_features *f);

/* 1 when q-side (resp. k-side) tensors use the packed layout [total, H, D]. */
int fg_features_packed(const fagen_attention_features *f);

/* Checks the values (sizes, extents, cap, rate, strides).  seqlen_q/_k are
 * the call's (longest) lengths.  Returns FAGEN_OK, FAGEN_E_INVALID_ARGUMENT or
 * FAGEN_E_BAD_SHAPE with a message naming the field. */
fagen_status fg_features_validate(const fagen_attention_features *f, int seqlen_q, int seqlen_k,
                                  fg_err *err);

/* Checks the alignment of the device arrays: FAGEN_OK or FAGEN_E_MISALIGNED. */
fagen_status fg_features_check_arrays(const fagen_attention_features *f, fg_err *err);

/* The kernels' view of f for a call with these sizes, causal flag and
 * softmax scale (f valid). */
void fg_features_params(const fagen_attention_features *f, int causal, int seqlen_q,
                        int seqlen_k, float scale, fg_feat_params *out);

#endif
