/* fg_forward: fagen_attention_forward — argument validation, kernel
 * selection and launch. */
#ifndef FG_FORWARD_H
#define FG_FORWARD_H

#include "fagen.h"
#include "fg_base.h"
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

/* Fills the kernel parameter block for args and variant v (args valid). */
void fg_fwd_params_fill(const fagen_attention_args *a, const fagen_variant *v, fg_fwd_params *p);

#endif
