/* fg_forward: fagen_attention_forward — argument validation, kernel
 * selection and launch. */
#ifndef FG_FORWARD_H
#define FG_FORWARD_H

#include "fagen.h"
#include "fg_base.h"
#include "fg_ctx.h"
#include "fg_kernel_abi.h"
#include "fg_tune.h"

/* Validates args; pointers only when check_pointers.  Returns FAGEN_OK or the
 * status documented for fagen_attention_forward, with a message. */
fagen_status fg_fwd_validate(const fagen_attention_args *a, int check_pointers, fg_err *err);

/* The variant for args on target t: forced, else the tables' entry (tune may
 * be NULL), else the heuristic (else the first valid candidate).  info may be
 * NULL.  Returns FAGEN_OK or FAGEN_E_UNSUPPORTED_ARCH. */
fagen_status fg_fwd_select(const fagen_attention_args *a, const fagen_target *t,
                           const fg_tune_state *tune, fagen_variant *out, fagen_select_info *info,
                           fg_err *err);

/* fg_fwd_select for any op (the backward selects with the forward's sizes). */
fagen_status fg_op_select(fagen_op op, const fagen_attention_args *a, const fagen_target *t,
                          const fg_tune_state *tune, fagen_variant *out, fagen_select_info *info,
                          fg_err *err);

/* Shared with the backward: the strides as used (all zero: contiguous
 * [B, S, H, D]); the stride rules of the forward for one tensor; alignment. */
fagen_strides fg_effective(fagen_strides s, int seqlen, int heads, int head_dim);
fagen_status fg_check_strides(const char *what, fagen_strides given, int batch, int seqlen,
                              int heads, int head_dim, int is_output, fg_err *err);
int fg_aligned(const void *p, uintptr_t a);

/* The target and tables of a select call: device's, else the current
 * context's device.  Returns FAGEN_OK, FAGEN_E_UNSUPPORTED_ARCH or the driver
 * statuses. */
fagen_status fg_select_target(fagen_ctx *ctx, const fagen_device_class *device, fagen_target *t,
                              const fg_tune_state **tune, fg_err *err);

/* The tuning tables of the device a scope runs on (NULL if none). */
const fg_tune_state *fg_scope_tune(fagen_ctx *ctx, const fg_cuda_api *cu, const fg_scope *s);

/* Fills the kernel parameter block for args and variant v (args valid). */
void fg_fwd_params_fill(const fagen_attention_args *a, const fagen_variant *v, fg_fwd_params *p);

#endif
