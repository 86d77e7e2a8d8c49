/*
 * fagen.h — the public C API of fagen, a generator and runtime for specialized
 * FlashAttention CUDA kernels.  This header is the specification: every function
 * says who owns what, whether it is thread-safe, and every status it returns.
 *
 * Conventions
 *   - Every function that can fail returns a fagen_status; FAGEN_OK is 0.
 *   - On failure a human-readable message is kept: per context (fagen_errmsg)
 *     and per thread (fagen_last_error), the latter also for failures that
 *     happen before a context exists.
 *   - The library never aborts or exits the process, and never prints unless
 *     FAGEN_LOG asks for it (see fagen_set_log_callback).
 *   - The CUDA driver and NVRTC are loaded at run time (dlopen); linking
 *     libfagen needs neither, and the library loads on machines without a GPU.
 *     Generation and compilation work there; GPU calls return
 *     FAGEN_E_NO_DRIVER or FAGEN_E_NO_DEVICE.
 *
 * Environment variables read by the library
 *   FAGEN_CACHE_DIR        root of the on-disk kernel cache (else
 *                          $XDG_CACHE_HOME/fagen if absolute, else ~/.cache/fagen)
 *   FAGEN_CACHE_DISABLE=1  keep compiled kernels in memory only
 *   FAGEN_CACHE_MAX_BYTES  cache size cap, default 1 GiB; least recently used
 *                          kernels are evicted beyond it
 *   FAGEN_LOG=info|debug   log compiles, cache hits/misses, evictions to stderr
 *   FAGEN_NVRTC            path of the NVRTC shared library to use (the only
 *                          candidate when set)
 *   FAGEN_LINEINFO=1       compile with line tables (profilers; larger CUBINs)
 *   FAGEN_TEMPLATE_DIR     read templates from this folder instead of the copies
 *                          built into the library (template development)
 *   FAGEN_TUNE_DIR         folder of user tuning tables (else CACHE_ROOT/tune)
 *   FAGEN_TUNE_SIBLING=0   never use a table shipped for another device of the
 *                          same target when this one has none (see
 *                          fagen_attention_select): the heuristic instead
 *   FAGEN_BWD_WGMMA=0      never select the Hopper backward (bwdwg): calls on
 *                          sm_90a run the mma.sync backward (bwd) instead
 *                          (comparisons, and a way around a bwdwg problem)
 *   FAGEN_PERSISTENT_CTAS=N  launch the Hopper forward (fwdwg) on at most N
 *                          CTAs instead of one per SM (tests: each CTA then
 *                          runs many tiles; any N >= 1 gives the same result)
 */
#ifndef FAGEN_H
#define FAGEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

#define FAGEN_VERSION_MAJOR 0
#define FAGEN_VERSION_MINOR 1
#define FAGEN_VERSION_PATCH 0
#define FAGEN_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH, for compile-time comparisons. */
#define FAGEN_VERSION_NUMBER \
  (FAGEN_VERSION_MAJOR * 10000 + FAGEN_VERSION_MINOR * 100 + FAGEN_VERSION_PATCH)

#if defined(FAGEN_BUILDING_LIBRARY) && defined(__GNUC__)
#define FAGEN_API __attribute__((visibility("default")))
#else
#define FAGEN_API
#endif

/* The version of the library actually loaded, e.g. "0.1.0".  Static string. */
FAGEN_API const char *fagen_version(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                             */
/* ------------------------------------------------------------------------ */

/* One list generates the enum, fagen_strerror() and fagen_status_name().
 * X(name, code, description) */
#define FAGEN_STATUS_LIST(X)                                                         \
  X(FAGEN_OK, 0, "success")                                                          \
  X(FAGEN_E_INVALID_ARGUMENT, 1, "invalid argument")                                 \
  X(FAGEN_E_NULL_POINTER, 2, "a required pointer is NULL")                           \
  X(FAGEN_E_MISALIGNED, 3, "a device pointer is not 16-byte aligned")                \
  X(FAGEN_E_BAD_STRIDE, 4, "a stride is negative or breaks 16-byte vector access")   \
  X(FAGEN_E_BAD_SHAPE, 5, "a size is zero, negative, too large or inconsistent")     \
  X(FAGEN_E_BAD_HEADS, 6, "heads_q is not a multiple of heads_kv")                   \
  X(FAGEN_E_UNSUPPORTED_DTYPE, 7, "unsupported data type")                           \
  X(FAGEN_E_UNSUPPORTED_HEAD_DIM, 8, "unsupported head dimension")                   \
  X(FAGEN_E_INVALID_VARIANT, 9, "the kernel variant violates a constraint")          \
  X(FAGEN_E_BAD_NAME, 10, "the variant name cannot be parsed")                       \
  X(FAGEN_E_TEMPLATE, 11, "a kernel template failed")                                \
  X(FAGEN_E_NO_MEMORY, 12, "out of host memory")                                     \
  X(FAGEN_E_IO, 13, "a file system operation failed")                                \
  X(FAGEN_E_NO_NVRTC, 14, "the NVRTC library could not be loaded")                   \
  X(FAGEN_E_COMPILE, 15, "NVRTC failed to compile a kernel")                         \
  X(FAGEN_E_NO_DRIVER, 16, "the CUDA driver could not be loaded")                    \
  X(FAGEN_E_NO_DEVICE, 17, "no usable CUDA device")                                  \
  X(FAGEN_E_CUDA, 18, "a CUDA driver call failed")                                   \
  X(FAGEN_E_UNSUPPORTED_ARCH, 19, "the GPU architecture is not supported")           \
  X(FAGEN_E_BUFFER_TOO_SMALL, 20, "the caller's buffer is too small")                \
  X(FAGEN_E_NOT_FOUND, 21, "not found")                                              \
  X(FAGEN_E_INTERNAL, 22, "internal error (a bug in fagen)")                         \
  X(FAGEN_E_BAD_OFFSETS, 23, "sequence offsets decrease or exceed the buffer")

#define FAGEN_STATUS_ENUM_ENTRY_(name, code, text) name = code,
typedef enum fagen_status { FAGEN_STATUS_LIST(FAGEN_STATUS_ENUM_ENTRY_) } fagen_status;
#undef FAGEN_STATUS_ENUM_ENTRY_

/* A one-line description of a status ("invalid argument").  Unknown codes give
 * "unknown status".  Static string; thread-safe. */
FAGEN_API const char *fagen_strerror(fagen_status status);

/* The identifier of a status ("FAGEN_E_INVALID_ARGUMENT"), or "FAGEN_UNKNOWN".
 * Static string; thread-safe. */
FAGEN_API const char *fagen_status_name(fagen_status status);

/* The message of the most recent failure of a fagen call on this thread
 * (with or without a context), or "" if none failed yet.  The pointer stays
 * valid on this thread until its next fagen call.  Thread-safe. */
FAGEN_API const char *fagen_last_error(void);

/* ------------------------------------------------------------------------ */
/* Kernel variants                                                          */
/* ------------------------------------------------------------------------ */

/* What a kernel computes. */
typedef enum fagen_op {
  FAGEN_OP_FWD = 0,    /* attention forward: O and the log-sum-exp */
  FAGEN_OP_BWD = 1,    /* attention backward: dQ, dK, dV; dQ summed with fp32
                          atomics (name token "bwd") */
  FAGEN_OP_BWD_DET = 2, /* attention backward with no unordered reductions:
                          bitwise reproducible, slower ("bwddet") */
  FAGEN_OP_FWD_WGMMA = 3, /* attention forward, computed like FAGEN_OP_FWD by the
                          Hopper kernel family (wgmma, TMA, warp-specialized;
                          sm_90a only; of the features, softcap and sequence
                          lengths, packed or padded): warps are
                          4 per warpgroup, one producer and block_q / 64
                          consumers ("fwdwg").  fagen_attention_forward uses
                          it on sm_90a where it applies */
  FAGEN_OP_BWD_WGMMA = 4 /* attention backward, computed like FAGEN_OP_BWD (dQ
                          summed with fp32 atomics) by the Hopper kernel family
                          (wgmma, TMA, warp-specialized; sm_90a only; head_dim
                          64, 96, 128 or 256; no features): warps are 4 per
                          warpgroup, one producer and block_kv / 64 consumers
                          (head_dim 256: two consumers that split head_dim,
                          block_kv 64) ("bwdwg").  fagen_attention_backward
                          uses it on sm_90a where it applies (not
                          deterministic) unless FAGEN_BWD_WGMMA=0 */
} fagen_op;

typedef enum fagen_dtype {
  FAGEN_DTYPE_FP16 = 0, /* IEEE half */
  FAGEN_DTYPE_BF16 = 1  /* bfloat16 */
} fagen_dtype;

/* Score and mask features a variant is compiled with (fagen_variant.features,
 * a bit set).  A kernel without a feature has none of its code; the values
 * (lengths, window extents, cap, slopes) are given at run time in
 * fagen_attention_features.  Name tokens in brackets. */
typedef enum fagen_feature {
  FAGEN_FEATURE_VARLEN = 1,  /* per-sequence lengths: packed or padded ("varlen") */
  FAGEN_FEATURE_WINDOW = 2,  /* sliding window, left and right extents ("window") */
  FAGEN_FEATURE_SOFTCAP = 4, /* scores cap * tanh(s / cap) ("softcap") */
  FAGEN_FEATURE_ALIBI = 8,   /* per-head linear bias slope * (j - i) ("alibi") */
  FAGEN_FEATURE_DROPOUT = 16 /* dropout on the attention probabilities ("dropout") */
} fagen_feature;
#define FAGEN_FEATURES_ALL 31u

/* A compile target: compute capability * 10 (80, 86, 87, 89, 90, 100, 120)
 * and whether it is the architecture-specific target (sm_90a, sm_100a), which
 * enables instructions such as wgmma.  Written "sm_90a" on command lines and
 * "sm90a" inside variant names. */
typedef struct fagen_target {
  int arch;
  int arch_specific;
} fagen_target;

/* One point of the variant space: everything a generated kernel is
 * specialized on.  Fields are plain values; a variant is valid when
 * fagen_variant_validate() says so. */
typedef struct fagen_variant {
  fagen_op op;
  int head_dim;      /* compiled head dimension: 32, 64, 96, 128, 160, 192, 224, 256 */
  int block_q;       /* query rows per thread block */
  int block_kv;      /* key/value rows per pipeline tile */
  int warps;         /* warps per thread block */
  int stages;        /* shared-memory pipeline stages for K/V tiles */
  int causal;        /* 0 or 1 */
  unsigned features; /* fagen_feature bits; 0 for plain attention */
  fagen_dtype dtype; /* element type of q, k, v, o */
  fagen_target target;
  int pingpong;      /* fwdwg only, 0 or 1: the consumer warpgroups take turns issuing
                        their products (named barriers), so that one's products run
                        while the others do their softmax; 0 for every other family */
  int prefetch_q;    /* fwdwg only, 0 or 1: a second Q tile in shared memory, so that
                        the producer loads the next output tile's Q while the
                        consumers still work on this one; 0 for every other family */
} fagen_variant;

/* Longest variant name plus its NUL: a buffer of this size always suffices. */
#define FAGEN_VARIANT_NAME_MAX 96

/* Writes the variant's self-describing name, e.g.
 *   fwd_d128_bq128_bk64_w4_s2_causal_bf16_sm80
 *   bwd_d128_bq64_bk128_w8_s2_varlen_window_softcap_bf16_sm90a
 *   fwdwg_d128_bq128_bk128_w12_s2_pp_causal_bf16_sm90a
 * ("_pp" appears only with pingpong set, "_pq" only with prefetch_q set,
 * "_causal" only for causal variants,
 * then the feature tokens in bit order; the arch token is sm80, sm90a, ...).  The name is the kernel symbol, cache file stem and autotune key.
 * Returns FAGEN_OK; FAGEN_E_NULL_POINTER; FAGEN_E_INVALID_ARGUMENT if a field is
 * outside anything nameable (unknown op or dtype, a negative number);
 * FAGEN_E_BUFFER_TOO_SMALL if size cannot hold the name.  Does not validate
 * resource budgets (see fagen_variant_validate).  Thread-safe. */
FAGEN_API fagen_status fagen_variant_name(const fagen_variant *variant, char *buf,
                                          size_t size);

/* The FAGEN_FEATURE_* bits as their name tokens joined by '+', in bit order
 * ("varlen+softcap"; "" for none): what a tuning table entry's "features"
 * field holds.  Returns FAGEN_OK, FAGEN_E_NULL_POINTER,
 * FAGEN_E_INVALID_ARGUMENT (unknown bits) or FAGEN_E_BUFFER_TOO_SMALL (buf
 * then holds "").  Thread-safe. */
FAGEN_API fagen_status fagen_features_name(unsigned features, char *buf, size_t size);

/* Parses a name written by fagen_variant_name back into a variant.
 * Returns FAGEN_OK, FAGEN_E_NULL_POINTER or FAGEN_E_BAD_NAME.  Thread-safe. */
FAGEN_API fagen_status fagen_variant_parse(const char *name, fagen_variant *out);

/* Checks the variant against the one validity predicate of the variant space:
 * supported op, dtype, head_dim and arch; divisibility of the tile sizes by the
 * warp layout; the shared-memory budget of the target arch and an estimate of
 * the register budget.  On FAGEN_E_INVALID_VARIANT the reason is written to
 * reason (if not NULL; truncated to size).  Returns FAGEN_OK,
 * FAGEN_E_NULL_POINTER or FAGEN_E_INVALID_VARIANT.  Thread-safe. */
FAGEN_API fagen_status fagen_variant_validate(const fagen_variant *variant,
                                              char *reason, size_t size);

/* Generates the self-contained CUDA source of a valid variant (no #include;
 * a banner names the generator version, template and full parameter tuple;
 * the same variant always gives the same bytes).  On success *source is a
 * NUL-terminated string owned by the caller (release with fagen_free) and
 * *length (if not NULL) its length.  Returns FAGEN_OK, FAGEN_E_NULL_POINTER,
 * FAGEN_E_INVALID_VARIANT, FAGEN_E_TEMPLATE (message names template file and
 * line), FAGEN_E_IO (a template in FAGEN_TEMPLATE_DIR unreadable) or
 * FAGEN_E_NO_MEMORY.  Thread-safe. */
FAGEN_API fagen_status fagen_variant_source(const fagen_variant *variant, char **source,
                                            size_t *length);

/* Releases memory that fagen handed to the caller.  NULL is harmless. */
FAGEN_API void fagen_free(void *ptr);

/* The default kernel set: the variants `fagen --emit` writes and
 * `fagen cache warm` compiles — every op (fwd, bwd, bwddet, and on sm_90a
 * fwdwg and bwdwg), every head_dim the op supports, both dtypes, causal and
 * not, each with its default tile choice, for each of n_targets targets (96
 * per target; 144 for sm_90a: 32 fwdwg and 16 bwdwg more).
 * Writes up to capacity variants to out and sets *count to the total; with
 * out NULL and capacity 0 it only counts.  Returns FAGEN_OK, FAGEN_E_NULL_POINTER,
 * FAGEN_E_INVALID_ARGUMENT (unsupported target) or FAGEN_E_BUFFER_TOO_SMALL
 * (then *count is the size needed).  Thread-safe. */
FAGEN_API fagen_status fagen_default_variants(const fagen_target *targets, size_t n_targets,
                                              fagen_variant *out, size_t capacity,
                                              size_t *count);

/* The tile candidates of one case: every combination of the block_q,
 * block_kv, warps and stages values that the axis table lists for base's op
 * (and for fwdwg both pingpong and both prefetch_q settings),
 * combined with base's op, head_dim, dtype, causal and target — valid or not
 * (fagen_variant_validate says which, and why).  Writes up to capacity to out
 * and sets *count to the total; out may be NULL when capacity is 0.  Returns
 * FAGEN_OK, FAGEN_E_NULL_POINTER, FAGEN_E_INVALID_ARGUMENT (unknown op) or
 * FAGEN_E_BUFFER_TOO_SMALL.  Thread-safe. */
FAGEN_API fagen_status fagen_variant_candidates(const fagen_variant *base, fagen_variant *out,
                                                size_t capacity, size_t *count);

/* Parses a target token: "sm_80", "sm80", "sm_90a", "sm90a".  Returns
 * FAGEN_OK, FAGEN_E_NULL_POINTER or FAGEN_E_INVALID_ARGUMENT (malformed, or a
 * target fagen does not support: it needs sm_80 or newer).  Thread-safe. */
FAGEN_API fagen_status fagen_target_parse(const char *token, fagen_target *out);

/* Writes a target as "sm_90a" (with_underscore) or "sm90a".  Returns FAGEN_OK,
 * FAGEN_E_NULL_POINTER or FAGEN_E_BUFFER_TOO_SMALL.  Thread-safe. */
FAGEN_API fagen_status fagen_target_name(const fagen_target *target, int with_underscore,
                                         char *buf, size_t size);

/* ------------------------------------------------------------------------ */
/* Context                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct fagen_ctx fagen_ctx;

/* Creates a context: kernel cache settings (read from the environment now),
 * the map of loaded kernels, error and log state.  Creating one touches
 * neither the driver nor NVRTC.  Returns FAGEN_OK, FAGEN_E_NULL_POINTER or
 * FAGEN_E_NO_MEMORY.  Thread-safe. */
FAGEN_API fagen_status fagen_ctx_create(fagen_ctx **out);

/* Destroys a context and unloads its kernels.  NULL is harmless.  No other
 * thread may use ctx during or after the call. */
FAGEN_API void fagen_ctx_destroy(fagen_ctx *ctx);

/* The message of the most recent failure on this context ("" if none), or of
 * the calling thread when ctx is NULL.  Copied into a per-thread buffer: the
 * pointer stays valid on this thread until its next fagen call.  A context may
 * be shared between threads; then the message is that of whichever thread
 * failed last.  Thread-safe. */
FAGEN_API const char *fagen_errmsg(const fagen_ctx *ctx);

/* The full NVRTC log of the most recent failed compile on this context
 * ("" if none).  Same lifetime rules as fagen_errmsg.  Thread-safe. */
FAGEN_API const char *fagen_compile_log(const fagen_ctx *ctx);

/* Log levels, most severe first. */
typedef enum fagen_log_level {
  FAGEN_LOG_WARN = 1,
  FAGEN_LOG_INFO = 2,
  FAGEN_LOG_DEBUG = 3
} fagen_log_level;

typedef void (*fagen_log_fn)(void *user, fagen_log_level level, const char *message);

/* Routes this context's log lines (compiles, cache hits and misses,
 * evictions, warnings) to fn instead of stderr, for levels up to max_level.
 * fn == NULL restores the default: stderr, filtered by FAGEN_LOG (warnings are
 * always printed).  fn may be called from any thread that uses ctx, and must
 * not call back into fagen with this ctx.  Not thread-safe against concurrent
 * calls on the same ctx.  Returns FAGEN_OK or FAGEN_E_NULL_POINTER. */
FAGEN_API fagen_status fagen_set_log_callback(fagen_ctx *ctx, fagen_log_fn fn, void *user,
                                              fagen_log_level max_level);

/* ------------------------------------------------------------------------ */
/* Compilation and loading                                                  */
/* ------------------------------------------------------------------------ */

/* What is known about a compiled kernel. */
typedef struct fagen_kernel_info {
  char name[FAGEN_VARIANT_NAME_MAX]; /* variant name = kernel symbol */
  /* The next five come from NVRTC's ptxas report; -1 where it gave none. */
  int registers;                     /* per thread */
  int spill_store_bytes;             /* ptxas spill stores */
  int spill_load_bytes;              /* ptxas spill loads */
  int stack_bytes;                   /* per-thread stack frame */
  int static_smem_bytes;             /* statically declared shared memory */
  int dynamic_smem_bytes;            /* dynamic shared memory per block at launch */
  int threads;                       /* threads per block */
  double compile_seconds;            /* NVRTC time when it was compiled */
  size_t cubin_bytes;
  int from_disk_cache; /* 1 if this call found it in the on-disk cache */
} fagen_kernel_info;

/* Makes sure the CUBIN of a valid variant exists: looks in the on-disk cache,
 * else generates the source and compiles it with NVRTC for variant->arch, then
 * stores it.  Needs no GPU and no driver.  info may be NULL.  Returns FAGEN_OK,
 * FAGEN_E_NULL_POINTER, FAGEN_E_INVALID_VARIANT, FAGEN_E_TEMPLATE,
 * FAGEN_E_NO_NVRTC (the message names every path tried), FAGEN_E_COMPILE (the
 * log is in fagen_compile_log) or FAGEN_E_NO_MEMORY.  An unusable cache
 * directory is not an error: it degrades to memory only with one warning.
 * Thread-safe. */
FAGEN_API fagen_status fagen_compile(fagen_ctx *ctx, const fagen_variant *variant,
                                     fagen_kernel_info *info);

/* Compiles (as fagen_compile) and hands out the CUBIN: *cubin (owned by the
 * caller, release with fagen_free) and *size.  For shipping kernels ahead of
 * time and for inspecting them (cuobjdump -sass).  info may be NULL.  Returns
 * the statuses of fagen_compile and FAGEN_E_NULL_POINTER.  Thread-safe. */
FAGEN_API fagen_status fagen_cubin(fagen_ctx *ctx, const fagen_variant *variant, void **cubin,
                                   size_t *size, fagen_kernel_info *info);

/* Compiles (as fagen_compile) and loads each of n variants for the device of
 * the current CUDA context, so that later launches of them do no compilation
 * or loading — call it before capturing a CUDA graph.  Variants for another
 * arch than the device's are rejected with FAGEN_E_UNSUPPORTED_ARCH.  The
 * context used is the calling thread's current one, else the primary context
 * of device 0.  Returns the statuses of fagen_compile and FAGEN_E_NO_DRIVER,
 * FAGEN_E_NO_DEVICE, FAGEN_E_CUDA, FAGEN_E_UNSUPPORTED_ARCH.  Thread-safe. */
FAGEN_API fagen_status fagen_prepare(fagen_ctx *ctx, const fagen_variant *variants, size_t n);

/* ------------------------------------------------------------------------ */
/* Devices, tuning tables and versions                                      */
/* ------------------------------------------------------------------------ */

/* The class of a GPU that tuning tables are keyed by. */
typedef struct fagen_device_class {
  char name[128];      /* as the driver reports it, e.g. "NVIDIA H100 80GB HBM3";
                          "" matches no table (heuristic choices only) */
  fagen_target target; /* the compile target of the device */
  int sm_count;        /* multiprocessors */
} fagen_device_class;

/* The class of the device of the current CUDA context (else device 0).
 * Returns FAGEN_OK, FAGEN_E_NULL_POINTER or the driver statuses.
 * Thread-safe. */
FAGEN_API fagen_status fagen_device_class_current(fagen_ctx *ctx, fagen_device_class *out);

/* The file stem of a class's table, e.g. "sm90a-nvidia-h100-80gb-hbm3-132sm":
 * target, then the name lowercased with runs of other characters as '-',
 * then the SM count.  Returns FAGEN_OK, FAGEN_E_NULL_POINTER or
 * FAGEN_E_BUFFER_TOO_SMALL.  Thread-safe. */
FAGEN_API fagen_status fagen_device_class_slug(const fagen_device_class *dc, char *buf,
                                               size_t size);

/* Parses "NAME,TARGET,SMS", e.g. "NVIDIA A100-SXM4-80GB,sm_80,108" (the
 * name may contain commas: the last two fields are the target and the SM
 * count).  Returns FAGEN_OK, FAGEN_E_NULL_POINTER or FAGEN_E_INVALID_ARGUMENT.
 * Thread-safe. */
FAGEN_API fagen_status fagen_device_class_parse(const char *spec, fagen_device_class *out);

/* Where the user tuning table of a class lives:
 * $FAGEN_TUNE_DIR/SLUG.json, else CACHE_ROOT/tune/SLUG.json (whether or not
 * it exists).  Returns FAGEN_OK, FAGEN_E_NULL_POINTER, FAGEN_E_NOT_FOUND (no
 * cache root known) or FAGEN_E_BUFFER_TOO_SMALL.  Thread-safe. */
FAGEN_API fagen_status fagen_tune_table_path(fagen_ctx *ctx, const fagen_device_class *dc,
                                             char *buf, size_t size);

/* The hash of the generator and the template set (64 hex digits + NUL),
 * recorded in tuning tables: a table measured with other templates is not
 * used.  Returns FAGEN_OK, FAGEN_E_NULL_POINTER or FAGEN_E_IO (an unreadable
 * FAGEN_TEMPLATE_DIR).  Thread-safe. */
FAGEN_API fagen_status fagen_template_hash(char out[65]);

/* NVRTC's version (loading NVRTC if needed) and the driver's CUDA version
 * (e.g. 13000; loading the driver).  Either pointer pair may be NULL.
 * Returns FAGEN_OK, FAGEN_E_NO_NVRTC or the driver statuses.  Thread-safe. */
FAGEN_API fagen_status fagen_nvrtc_version(int *major, int *minor);
FAGEN_API fagen_status fagen_driver_version(int *version);

/* ------------------------------------------------------------------------ */
/* The on-disk kernel cache                                                 */
/* ------------------------------------------------------------------------ */

typedef struct fagen_cache_status {
  char dir[1100];              /* folder of kernel files ("" if no root is known) */
  int enabled;                 /* 0 when FAGEN_CACHE_DISABLE=1 */
  int usable;                  /* 0 when disabled or degraded to memory only */
  unsigned long long max_bytes;
  unsigned long long total_bytes; /* of the kernel files present */
  size_t files;
} fagen_cache_status;

/* Describes the cache of ctx (scanning its folder).  Returns FAGEN_OK,
 * FAGEN_E_NULL_POINTER or FAGEN_E_IO.  Thread-safe. */
FAGEN_API fagen_status fagen_cache_info(fagen_ctx *ctx, fagen_cache_status *out);

typedef struct fagen_cache_entry {
  char name[FAGEN_VARIANT_NAME_MAX]; /* variant */
  char file[256];                    /* file name inside the cache folder */
  char target[16];
  char nvrtc_version[32];
  long long bytes;
  double last_used; /* seconds since the epoch (file modification time) */
  int valid;        /* 0: damaged (it will never be loaded) */
  int registers;
  int spill_store_bytes;
  double compile_seconds;
} fagen_cache_entry;

/* Lists the kernel files, least recently used first.  *entries is owned by
 * the caller (fagen_free); *count may be 0.  Returns FAGEN_OK,
 * FAGEN_E_NULL_POINTER, FAGEN_E_IO or FAGEN_E_NO_MEMORY.  Thread-safe. */
FAGEN_API fagen_status fagen_cache_list(fagen_ctx *ctx, fagen_cache_entry **entries,
                                        size_t *count);

/* Removes every kernel file of the cache folder (kernels loaded in memory
 * stay loaded).  removed (may be NULL) counts them.  Returns FAGEN_OK,
 * FAGEN_E_NULL_POINTER or FAGEN_E_IO.  Thread-safe. */
FAGEN_API fagen_status fagen_cache_clear(fagen_ctx *ctx, size_t *removed);

/* ------------------------------------------------------------------------ */
/* Attention                                                                */
/* ------------------------------------------------------------------------ */

/* Strides in elements (not bytes) of a [batch, seq, heads, head_dim] tensor;
 * the head_dim axis is always contiguous (stride 1).  All three zero means the
 * contiguous default layout [batch, seq, heads, head_dim] (JAX's).  Otherwise
 * each must be a non-negative multiple of 8 elements, so rows stay 16-byte
 * aligned; an input may use 0 to broadcast along an axis, an output may not
 * (unless that axis has length 1). */
typedef struct fagen_strides {
  int64_t batch, seq, head;
} fagen_strides;

/* Masks and score modifiers beyond causal (issue: "the masks real models
 * use").  All zero (fagen_attention_args_init) means none.  Each one that is
 * used selects a kernel compiled with its FAGEN_FEATURE_* bit, so calls
 * without it run code that has none of it.
 *
 * Sequence lengths (FAGEN_FEATURE_VARLEN) — two layouts, which may be combined:
 *   packed: cu_seqlens_q and cu_seqlens_k (both or neither) are device arrays
 *     of batch + 1 int32 offsets; sequence b's queries are rows
 *     [cu_seqlens_q[b], cu_seqlens_q[b+1]) of a [total_q, heads, head_dim]
 *     buffer (q, o, dout, dq), its keys rows of cu_seqlens_k of a [total_k,
 *     ...] buffer (k, v, dk, dv); there is no padding between sequences.  The
 *     batch strides are not used (the zero default means [total, heads,
 *     head_dim] contiguous); seqlen_q and seqlen_k are the longest sequence
 *     (at most that many rows of a sequence are processed).  Offsets are read
 *     on the device: each sequence is clamped to [0, total) there, so bad
 *     offsets can never make a kernel read or write outside the buffers, but
 *     they are not reported; fagen_check_offsets() checks a host copy.
 *   padded: seqused_q and/or seqused_k are device arrays of batch int32 valid
 *     lengths (values clamped to [0, seqlen]); rows at and past a sequence's
 *     length are padding.  With both layouts, a valid length shortens its
 *     packed sequence (the length is the smaller of the two).
 *   Causal and window alignment use each sequence's own lengths.  A padded
 *   query row gets O = 0 and LSE = -inf (and dQ = 0); a padded key row gets
 *   dK = dV = 0.  In the packed layout rows outside every sequence are never
 *   written.  The LSE stays [batch, heads_q, seqlen_q] indexed by the row
 *   within its sequence; entries past a sequence's length get -inf.
 * Sliding window (FAGEN_FEATURE_WINDOW), window = 1: query i of a sequence
 *   with len_q queries and len_k keys sees key j iff
 *     i + d - window_left <= j <= i + d + window_right,   d = len_k - len_q,
 *   where -1 means no limit on that side; with causal the right extent is
 *   min(window_right, 0) (causal alone is window_right = 0).  With window = 0
 *   the extents are not read.  Key tiles
 *   outside every row's window are skipped, not masked.
 * Logit softcapping (FAGEN_FEATURE_SOFTCAP), softcap > 0: a score s =
 *   scale * q.k becomes softcap * tanh(s / softcap) before the softmax
 *   (Gemma 2); the backward applies its exact derivative.
 * ALiBi (FAGEN_FEATURE_ALIBI), alibi_slopes != NULL: fp32 device array;
 *   head h of batch b adds slope * (j - i - d) to its scaled (and capped)
 *   scores, slope = alibi_slopes[b * alibi_batch_stride + h] (stride 0: one
 *   slope per head for every batch).  d = len_k - len_q aligns it
 *   bottom-right like causal, so under causal the bias is -slope * distance
 *   to the diagonal, as in the ALiBi paper; without causal the same linear
 *   term is applied (it is not made symmetric).
 * Dropout (FAGEN_FEATURE_DROPOUT), dropout_p > 0: each probability P[i][j]
 *   is dropped with probability dropout_p, the kept ones scaled so that the
 *   expectation is unchanged; the LSE is that of the undropped scores.  The
 *   mask is a pure function of (dropout_seed, dropout_offset, b, h, i, j), so
 *   a call is reproducible bit for bit and the backward (given the same
 *   seed and offset) regenerates the forward's mask.  Exactly:
 *     p16 = round(dropout_p * 65536) (at most 65535); element (b, h, i, j),
 *     with i and j the query and key index within sequence b and
 *     bh = b * heads_q + h, is kept iff r >= p16, and a kept P is multiplied
 *     by 65536 / (65536 - p16), where r is the 16-bit half e (0: low) of
 *     word n of Philox4x32-10(counter = {4 (j >> 5) + ((j >> 1) & 3), i,
 *     bh, offset_lo}, key = {seed_lo, seed_hi ^ offset_hi}), n = (j >> 3) & 3,
 *     e = j & 1 (lo/hi: the low and high 32 bits).  Philox4x32-10 is Salmon
 *     et al.'s (multipliers 0xD2511F53, 0xCD9E8D57; key increments
 *     0x9E3779B9, 0xBB67AE85).
 * A query row that sees no key (an empty sequence, a window with no keys)
 * gets O = 0, LSE = -inf and zero gradients, never NaN. */
typedef struct fagen_attention_features {
  const int32_t *cu_seqlens_q, *cu_seqlens_k; /* packed: device, batch + 1 each */
  int total_q, total_k;                       /* packed: rows of the buffers */
  const int32_t *seqused_q, *seqused_k;       /* padded: device, batch each */
  int window;                                 /* 0 or 1 */
  int window_left, window_right;              /* >= -1; -1: unbounded */
  float softcap;                              /* 0: off; else > 0 */
  const float *alibi_slopes;                  /* NULL: off */
  int64_t alibi_batch_stride;                 /* elements, >= 0 */
  float dropout_p;                            /* 0: off; else in (0, 1) */
  uint64_t dropout_seed, dropout_offset;
} fagen_attention_features;

/* Checks a host copy of packed offsets: n + 1 values, offsets[0] >= 0,
 * non-decreasing, offsets[n] <= total.  what names them in the message
 * ("cu_seqlens_q").  Returns FAGEN_OK, FAGEN_E_NULL_POINTER,
 * FAGEN_E_INVALID_ARGUMENT (n or total negative) or FAGEN_E_BAD_OFFSETS
 * (with the first bad index in fagen_last_error).
 * Thread-safe. */
FAGEN_API fagen_status fagen_check_offsets(const int32_t *offsets, int n, int total,
                                           const char *what);

typedef struct fagen_attention_args {
  fagen_dtype dtype;
  int batch;
  int seqlen_q;
  int seqlen_k;
  int heads_q;  /* a multiple of heads_kv (GQA / MQA) */
  int heads_kv;
  int head_dim; /* a multiple of 8, at most 256 */
  int causal;   /* 0 or 1; aligned bottom-right when seqlen_q != seqlen_k:
                   query i sees key j iff j <= i + seqlen_k - seqlen_q
                   (FlashAttention-2's convention) */
  float softmax_scale; /* 0 means 1/sqrt(head_dim) */
  const void *q;       /* device pointers, 16-byte aligned */
  const void *k;
  const void *v;
  void *o;
  float *lse; /* optional (NULL: not written), 4-byte aligned: natural-log
                 log-sum-exp of each row's scaled scores, fp32
                 [batch, heads_q, seqlen_q] contiguous; a row that sees no key
                 gets -inf (and O = 0) */
  fagen_strides q_strides, k_strides, v_strides, o_strides;
  fagen_attention_features feat; /* masks and score modifiers; zero: none */
  /* Optional: run exactly this variant instead of the selected one (the
     autotuner uses this).  It must be valid, match dtype, causal, the
     features the call uses and the device's arch, and have head_dim >=
     args head_dim. */
  const fagen_variant *variant;
} fagen_attention_args;

/* Fills args with the defaults: zero sizes and pointers, contiguous strides,
 * default scale, no forced variant.  NULL is harmless. */
FAGEN_API void fagen_attention_args_init(fagen_attention_args *args);

/* Where a selected variant came from. */
typedef enum fagen_select_source {
  FAGEN_SELECT_FORCED = 0,        /* args->variant */
  FAGEN_SELECT_USER_TABLE = 1,    /* FAGEN_TUNE_DIR or CACHE_ROOT/tune */
  FAGEN_SELECT_SHIPPED_TABLE = 2, /* a table built into libfagen */
  FAGEN_SELECT_HEURISTIC = 3,     /* no table entry: published tile choices */
  FAGEN_SELECT_SIBLING_TABLE = 4  /* a measured table shipped for another device of
                                     the same target (this one has none) */
} fagen_select_source;

typedef struct fagen_select_info {
  fagen_select_source source;
  char table[1100]; /* the table's path, or "builtin:SLUG.json"; "" otherwise */
  int bucket;       /* the entry's sequence-length bucket (0: none) */
  double measured_ms; /* the entry's measured median, 0 if none */
  unsigned entry_features; /* FAGEN_FEATURE_* bits the entry was measured with: the
                              call's, or 0 (a plain call's entry, whose tiles a call
                              with features takes where no entry has its features) */
} fagen_select_info;

/* Chooses the variant that fagen_attention_forward would run for args on a
 * device of class `device` (NULL: the device of the current CUDA context).
 * Pointers in args are not checked.  This is the one answer to both "is this
 * supported?" (FAGEN_OK) and "which kernel?".  Order: a forced variant; the
 * user table of the class; the table shipped for the class; if none is
 * shipped for the class, the measured table shipped for another device of
 * the same target with the nearest SM count (ties to the first file name;
 * e.g. an H100 PCIe or a GH200 uses the H100 SXM table; FAGEN_TUNE_SIBLING=0
 * turns this off); within a table the entry of the nearest sequence-length
 * bucket (log2 distance to seqlen_k, ties to the smaller); else the
 * heuristic.  A call with features (FAGEN_FEATURE_*) takes an entry
 * measured with exactly its features from the user or shipped table, else
 * their plain call's entry (its features compiled into the same tiles), and
 * from a sibling table likewise only after those.  An anonymous class (empty name) uses no table.  A table that is
 * damaged, from another fagen or template version or for another class, and
 * any entry naming a variant that does not validate for the class, is
 * reported once per context (log warning) and skipped.  info may be NULL.
 * Returns FAGEN_OK, the shape statuses of fagen_attention_forward,
 * FAGEN_E_UNSUPPORTED_ARCH, or (device NULL) the driver statuses.
 * Thread-safe. */
FAGEN_API fagen_status fagen_attention_select(fagen_ctx *ctx, const fagen_attention_args *args,
                                              const fagen_device_class *device,
                                              fagen_variant *out, fagen_select_info *info);

/* O = softmax(scale * Q K^T [+ causal mask]) V, and optionally the LSE, on
 * stream (a CUstream / cudaStream_t; NULL is the legacy default stream).
 * Arguments are validated before anything is launched; on failure nothing is
 * launched and nothing is written.  The first call for a variant compiles and
 * loads it (see fagen_prepare to do that ahead of time).  Asynchronous: the
 * call returns once the kernel is queued.  Returns FAGEN_OK or:
 *   FAGEN_E_NULL_POINTER      ctx, args, q, k, v or o is NULL
 *   FAGEN_E_MISALIGNED        q, k, v, o not 16-byte aligned, lse not 4-byte
 *   FAGEN_E_BAD_STRIDE        a stride is negative or not a multiple of 8, or
 *                             an output stride is 0 along an axis longer than 1
 *   FAGEN_E_BAD_SHAPE         a size <= 0, an offset that overflows 64 bits,
 *                             or more than 2^31-1 thread blocks
 *   FAGEN_E_BAD_HEADS         heads_q % heads_kv != 0
 *   FAGEN_E_UNSUPPORTED_DTYPE dtype not fp16/bf16
 *   FAGEN_E_UNSUPPORTED_HEAD_DIM head_dim not a multiple of 8 in [8, 256]
 *   FAGEN_E_INVALID_ARGUMENT  causal not 0/1, scale not finite or negative,
 *                             a forced variant that does not fit args;
 *                             features: only one of cu_seqlens_q/_k, total_q
 *                             or total_k <= 0 with them, window not 0/1,
 *                             (window 1) an extent below -1, softcap negative or
 *                             not finite, alibi_batch_stride negative,
 *                             dropout_p outside [0, 1)
 *   FAGEN_E_MISALIGNED also for offsets, lengths or slopes not 4-byte aligned
 *   FAGEN_E_NO_DRIVER, FAGEN_E_NO_DEVICE, FAGEN_E_CUDA, FAGEN_E_UNSUPPORTED_ARCH
 *   and the statuses of fagen_compile.
 * Thread-safe. */
FAGEN_API fagen_status fagen_attention_forward(fagen_ctx *ctx, const fagen_attention_args *args,
                                               void *stream);


/* ------------------------------------------------------------------------ */
/* Attention backward                                                       */
/* ------------------------------------------------------------------------ */

/* The gradients of O = attention(Q, K, V) for a loss L, given dO = dL/dO.
 * The sizes, causal flag and scale are those of the forward call; lse is the
 * forward's LSE output (fagen_attention_forward with args.lse set).  GQA/MQA:
 * dK and dV of a kv head sum the contributions of every query head of its
 * group.  Layouts and stride rules are the forward's. */
typedef struct fagen_attention_bwd_args {
  fagen_dtype dtype;
  int batch;
  int seqlen_q;
  int seqlen_k;
  int heads_q;
  int heads_kv;
  int head_dim;
  int causal;
  float softmax_scale; /* 0 means 1/sqrt(head_dim) */
  /* Inputs (device pointers, 16-byte aligned). */
  const void *q, *k, *v, *o, *dout;
  const float *lse; /* required: [batch, heads_q, seqlen_q] contiguous, 4-byte aligned */
  /* Outputs (device pointers, 16-byte aligned); dq has q's shape, dk and dv k's. */
  void *dq, *dk, *dv;
  fagen_strides q_strides, k_strides, v_strides, o_strides, dout_strides;
  fagen_strides dq_strides, dk_strides, dv_strides;
  /* The forward call's masks and score modifiers (the same values). */
  fagen_attention_features feat;
  /* 1: bitwise reproducible gradients (no unordered atomics): dQ is computed
     by a second kernel that recomputes the attention scores, about 1.4x the
     work of the default.  0 (default): dQ is summed with fp32 atomics, so its
     last bits may differ from run to run (dK and dV never do). */
  int deterministic;
  /* fp32 scratch of fagen_attention_backward_workspace() bytes, 16-byte
     aligned, owned by the caller and not used by another call until this one
     has finished on stream.  NULL with workspace_bytes 0: the call allocates
     it on stream (cuMemAllocAsync, stream-ordered from the device's default
     pool) and frees it behind its kernels; that works under graph capture but
     costs an allocation per call. */
  void *workspace;
  size_t workspace_bytes;
  /* Optional: run exactly this backward variant (op FAGEN_OP_BWD or, on
     sm_90a, FAGEN_OP_BWD_WGMMA; FAGEN_OP_BWD_DET when deterministic); the
     autotuner uses this. */
  const fagen_variant *variant;
} fagen_attention_bwd_args;

/* Fills args with the defaults: zero sizes and pointers, contiguous strides,
 * default scale, bf16, atomic dQ, no workspace, no forced variant.  NULL is
 * harmless. */
FAGEN_API void fagen_attention_bwd_args_init(fagen_attention_bwd_args *args);

/* The workspace fagen_attention_backward needs for args, in bytes:
 * 4 * batch * heads_q * seqlen_q for D = rowsum(dO * O) (rounded up to a
 * multiple of 16), plus, unless
 * deterministic, 4 * batch * heads_q * seqlen_q * H for the dQ accumulator,
 * where H is head_dim rounded up to the next compiled size (32, 64, 96, ...,
 * 256), and 8 * batch * heads_q * ceil(seqlen_q / 128) * 128 for the row
 * statistics of the Hopper backward (reserved whichever kernel runs).  Only
 * sizes are read (pointers may be NULL).  Returns FAGEN_OK,
 * FAGEN_E_NULL_POINTER or the shape statuses of fagen_attention_backward.
 * Thread-safe. */
FAGEN_API fagen_status fagen_attention_backward_workspace(fagen_ctx *ctx,
                                                          const fagen_attention_bwd_args *args,
                                                          size_t *bytes);

/* Chooses the backward variant that fagen_attention_backward would run (see
 * fagen_attention_select; the same order of tables and heuristic).  On
 * sm_90a a call that is not deterministic, uses no feature, has head_dim
 * 33..128 or 225..256 (compiled as 64, 96, 128 or 256) and tensors TMA
 * can describe gets the Hopper family (FAGEN_OP_BWD_WGMMA) unless
 * FAGEN_BWD_WGMMA=0; every other
 * call gets FAGEN_OP_BWD or FAGEN_OP_BWD_DET.  Pointers are not checked.  Returns FAGEN_OK, the shape statuses of
 * fagen_attention_backward, FAGEN_E_UNSUPPORTED_ARCH or (device NULL) the
 * driver statuses.  Thread-safe. */
FAGEN_API fagen_status fagen_attention_backward_select(fagen_ctx *ctx,
                                                       const fagen_attention_bwd_args *args,
                                                       const fagen_device_class *device,
                                                       fagen_variant *out,
                                                       fagen_select_info *info);

/* Writes dq, dk and dv on stream: three kernel launches (D and workspace
 * preparation, dK/dV with dQ, dQ conversion), all queued before the call
 * returns.  Arguments are validated before anything is launched; on failure
 * nothing is launched and nothing is written.  Returns FAGEN_OK or:
 *   FAGEN_E_NULL_POINTER      ctx, args, a tensor pointer or lse is NULL
 *                             ("lse is required")
 *   FAGEN_E_MISALIGNED        a tensor not 16-byte aligned, lse not 4-byte,
 *                             the workspace not 16-byte aligned
 *   FAGEN_E_BAD_STRIDE        as the forward, for each of the eight tensors
 *   FAGEN_E_BAD_SHAPE         as the forward
 *   FAGEN_E_BAD_HEADS, FAGEN_E_UNSUPPORTED_DTYPE, FAGEN_E_UNSUPPORTED_HEAD_DIM
 *   FAGEN_E_INVALID_ARGUMENT  causal not 0/1, deterministic not 0/1, scale
 *                             not finite or negative, the forward's rules
 *                             for feat, a forced variant that does not fit
 *   FAGEN_E_BUFFER_TOO_SMALL  a workspace smaller than
 *                             fagen_attention_backward_workspace() (or a
 *                             size without a pointer)
 *   FAGEN_E_NO_DRIVER, FAGEN_E_NO_DEVICE, FAGEN_E_CUDA (including a failed
 *   workspace allocation), FAGEN_E_UNSUPPORTED_ARCH and the statuses of
 *   fagen_compile.
 * O, dO and LSE share q's sizes by construction of this struct: shapes are
 * given once, and every tensor is read with those sizes and its own strides.
 * Thread-safe. */
FAGEN_API fagen_status fagen_attention_backward(fagen_ctx *ctx,
                                                const fagen_attention_bwd_args *args,
                                                void *stream);

#ifdef __cplusplus
}
#endif

#endif /* FAGEN_H */
