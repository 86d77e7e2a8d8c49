/* fg_kernels: the in-memory map of loaded kernels.  A variant is compiled
 * (fg_jit) and loaded (cuLibraryLoadData, context-independent) once per
 * fagen context; its CUfunction is resolved once per CUDA context, with the
 * dynamic shared-memory limit raised there when it exceeds 48 KB.  Threads
 * that ask for a variant another thread is loading wait for it. */
#ifndef FG_KERNELS_H
#define FG_KERNELS_H

#include "fg_ctx.h"

/* A module holds up to FG_KFN kernels: the variant's own (symbol = variant
 * name) and, for the backward, helpers named NAME_pre, NAME_post, NAME_dq.
 * Index 0 is the variant's kernel. */
enum { FG_KFN_MAIN = 0, FG_KFN_PRE = 1, FG_KFN_POST = 2, FG_KFN_DQ = 3, FG_KFN = 4 };

typedef struct fg_launchable {
  CUfunction fn; /* FG_KFN_MAIN */
  int threads;
  int smem;
  /* Every kernel of the module; fns[i] is NULL where the module has none. */
  CUfunction fns[FG_KFN];
  int fn_threads[FG_KFN];
  int fn_smem[FG_KFN];
} fg_launchable;

/* The function of variant v in the CUDA context of scope s (current during
 * the call).  The variant's target must be the device's.  Returns FAGEN_OK,
 * FAGEN_E_UNSUPPORTED_ARCH, FAGEN_E_CUDA or the statuses of fg_jit_cubin. */
fagen_status fg_kernel_get(fagen_ctx *ctx, const fg_cuda_api *cu, const fg_scope *s,
                           const fagen_variant *v, fg_launchable *out, fg_err *err);

/* Unloads everything (fagen_ctx_destroy). */
void fg_kernels_release(fagen_ctx *ctx);

#endif
