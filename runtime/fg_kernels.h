/* fg_kernels: the in-memory map of loaded kernels.  A variant is compiled
 * (fg_jit) and loaded (cuLibraryLoadData, context-independent) once per
 * fagen context; its CUfunction is resolved once per CUDA context, with the
 * dynamic shared-memory limit raised there when it exceeds 48 KB.  Threads
 * that ask for a variant another thread is loading wait for it. */
#ifndef FG_KERNELS_H
#define FG_KERNELS_H

#include "fg_ctx.h"

typedef struct fg_launchable {
  CUfunction fn;
  int threads;
  int smem;
} fg_launchable;

/* The function of variant v in the CUDA context of scope s (current during
 * the call).  The variant's target must be the device's.  Returns FAGEN_OK,
 * FAGEN_E_UNSUPPORTED_ARCH, FAGEN_E_CUDA or the statuses of fg_jit_cubin. */
fagen_status fg_kernel_get(fagen_ctx *ctx, const fg_cuda_api *cu, const fg_scope *s,
                           const fagen_variant *v, fg_launchable *out, fg_err *err);

/* Unloads everything (fagen_ctx_destroy). */
void fg_kernels_release(fagen_ctx *ctx);

#endif
