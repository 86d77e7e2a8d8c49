/* Helpers shared by the Criterion tests. */
#ifndef FG_TEST_H
#define FG_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "fagen.h"

/* A fresh empty directory under $TMPDIR (or /tmp); caller frees the string. */
char *fg_test_tmpdir(void);
/* rm -rf. */
void fg_test_rmrf(const char *path);
/* Reads a whole file (NUL-terminated) or returns NULL. */
char *fg_test_read(const char *path, size_t *size);
int fg_test_write(const char *path, const void *data, size_t size);
/* Counts directory entries whose name contains needle (NULL: all but . and ..). */
int fg_test_count_files(const char *dir, const char *needle);

/* Runs argv[0] with extra environment entries ("K=V", NULL-terminated; a
 * "K=" entry unsets K) and optional stdin text.  Captures stdout and stderr
 * (malloc'd).  Returns the exit status, or -1 if it did not exit normally. */
int fg_test_run(const char *const argv[], const char *const env[], char **out, char **err);
/* fg_test_run of `prog` followed by args (NULL-terminated, at most 30). */
int fg_test_run_prog(const char *prog, const char *const *args, const char *const env[], char **out,
                     char **err);

/* Host helpers (16-bit floats, random numbers, the float64 reference)
 * live in bench/fg_ref.h, shared with the demo and the benchmarks. */
#include "fg_ref.h"
#define fg_test_to_float fg_elem_to_float
#define fg_test_from_float fg_elem_from_float
#define fg_test_bf16_to_float fg_bf16_to_float
#define fg_test_float_to_bf16 fg_float_to_bf16
#define fg_test_seed fg_rand_seed
#define fg_test_uniform fg_rand_uniform

/* 1 if a CUDA device can be used (driver loads and has a device). */
int fg_test_gpu_available(const char **why);

/* For the GPU tests' .init: points FAGEN_CACHE_DIR at a fresh folder (in
 * *cache_dir, for fg_test_gpu_end), skips the test visibly where no GPU is
 * present, and makes device 0's primary context current.  Returns the driver
 * table. */
#include "fg_cuda.h"
const fg_cuda_api *fg_test_gpu_begin(char **cache_dir);
/* For .fini: removes the cache folder. */
void fg_test_gpu_end(char *cache_dir);

/* Compiles (fagen_compile) the n variants vs in `threads` threads; 0 if all
 * compiled, else -1 (fagen_errmsg(ctx) names the last failure).  The GPU
 * tests' candidate sweeps compile first so that the checks run warm. */
int fg_test_compile_all(fagen_ctx *ctx, const fagen_variant *vs, int n, int threads);

#endif
