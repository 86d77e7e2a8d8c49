/* fg_ctx: struct fagen_ctx and the pieces of it every runtime module uses. */
#ifndef FG_CTX_H
#define FG_CTX_H

#include <pthread.h>

#include "fagen.h"
#include "fg_base.h"
#include "fg_cache.h"
#include "fg_cuda.h"
#include "fg_log.h"
#include "fg_tune.h"

#define FG_MAX_DEVICES 64
#define FG_KMAP_BUCKETS 256
#define FG_MAX_TUNE 8 /* device classes with tables loaded per context */

typedef struct fg_kernel fg_kernel;     /* fg_kernels.c */
typedef struct fg_memcubin fg_memcubin; /* fg_jit.c */

struct fagen_ctx {
  pthread_mutex_t mu; /* guards everything below except log and cache */
  pthread_cond_t loaded; /* a kernel finished loading (or failed) */
  char errmsg[4096];
  char *compile_log;
  fg_log log;
  fg_cache cache;
  fg_memcubin *mem;                      /* CUBINs kept in memory when the disk is unusable */
  fg_kernel *kernels[FG_KMAP_BUCKETS];   /* loaded kernels by variant */
  CUcontext primary[FG_MAX_DEVICES];     /* retained primary contexts */
  fagen_target targets[FG_MAX_DEVICES];  /* compile target of each device */
  unsigned char target_known[FG_MAX_DEVICES];
  int sm_counts[FG_MAX_DEVICES];         /* multiprocessors of each device (with targets) */
  fg_tune_state tunes[FG_MAX_TUNE];      /* tables per device class, loaded on first use */
  int n_tunes;
  unsigned char dev_tune[FG_MAX_DEVICES]; /* 1 + index into tunes, 0: not looked up */
};

/* The tables of a device class, loaded on first use (NULL past FG_MAX_TUNE
 * classes: then only the heuristic applies). */
const fg_tune_state *fg_ctx_tune(fagen_ctx *ctx, const fagen_device_class *dc);

/* Records err as this context's and this thread's last error; returns its status. */
fagen_status fg_ctx_fail(fagen_ctx *ctx, const fg_err *err);

/* Keeps the log of a failed compile for fagen_compile_log. */
void fg_ctx_set_compile_log(fagen_ctx *ctx, const char *log);

/* The CUDA context a call runs in (DESIGN: the current context, else the
 * stream's, else the device's primary), made current for the call's duration. */
typedef struct fg_scope {
  CUcontext cuctx;
  CUdevice dev;
  int pushed;
  fagen_target target;
  int sm_count; /* multiprocessors of dev */
} fg_scope;

fagen_status fg_scope_enter(fagen_ctx *ctx, const fg_cuda_api *cu, CUstream stream, fg_scope *s,
                            fg_err *err);
void fg_scope_leave(const fg_cuda_api *cu, fg_scope *s);

/* The class (name, SMs) of device dev whose compile target is t. */
fagen_status fg_device_class_of(const fg_cuda_api *cu, CUdevice dev, const fagen_target *t,
                                fagen_device_class *out, fg_err *err);

#endif
