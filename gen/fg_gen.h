/* fg_gen: the generator — one variant in, one self-contained CUDA source out.
 * The runtime reaches the generator only through fg_gen_source. */
#ifndef FG_GEN_H
#define FG_GEN_H

#include "fagen.h"
#include "fg_base.h"

/* Bumped whenever the generator's C side changes what it emits. */
#define FG_GEN_REVISION 1

/* Appends the source of variant v to out.  Returns FAGEN_OK,
 * FAGEN_E_INVALID_VARIANT, FAGEN_E_TEMPLATE, FAGEN_E_IO or FAGEN_E_NO_MEMORY. */
fagen_status fg_gen_source(const fagen_variant *v, fg_buf *out, fg_err *err);

#endif
