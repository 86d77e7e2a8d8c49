#include "fg_nvrtc.h"

#include <dlfcn.h>
#include <limits.h>
#include <nvrtc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fg_dl.h"

/* Candidate paths are short; keep the lists small enough for thread stacks. */
#define FG_CAND_MAX 32
#define FG_CAND_LEN 1024

#define FG_NVRTC_FN_LIST(X)         \
  X(get_version, nvrtcVersion)          \
  X(get_error_string, nvrtcGetErrorString) \
  X(create, nvrtcCreateProgram)     \
  X(destroy, nvrtcDestroyProgram)   \
  X(compile, nvrtcCompileProgram)   \
  X(log_size, nvrtcGetProgramLogSize) \
  X(get_log, nvrtcGetProgramLog)    \
  X(cubin_size, nvrtcGetCUBINSize)  \
  X(get_cubin, nvrtcGetCUBIN)

#define FG_NVRTC_FIELD_(field, sym) __typeof__(&sym) field;
static struct {
  pthread_mutex_t mu;
  void *handle;
  char path[PATH_MAX];
  char version[32];
  FG_NVRTC_FN_LIST(FG_NVRTC_FIELD_)
} fg_nv = {.mu = PTHREAD_MUTEX_INITIALIZER};
#undef FG_NVRTC_FIELD_

static const char *const fg_nvrtc_names[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"};

/* Fills paths[] with the candidates of steps 1-4; returns their count. */
static int fg_nvrtc_paths(char paths[][FG_CAND_LEN], int cap, int *then_loader) {
  int n = 0;
  const char *explicit_path = getenv("FAGEN_NVRTC");
  if (explicit_path && *explicit_path) {
    fg_strlcpy(paths[n++], explicit_path, FG_CAND_LEN);
    *then_loader = 0;
    return n;
  }
  *then_loader = 1;
  char dirs[8][FG_CAND_LEN];
  int nd = 0;
  const char *env_dirs[] = {"CUDA_HOME", "CUDA_PATH"};
  for (size_t i = 0; i < FG_ARRAY_LEN(env_dirs); i++) {
    const char *d = getenv(env_dirs[i]);
    if (d && *d) snprintf(dirs[nd++], FG_CAND_LEN, "%.900s/lib64", d);
  }
  snprintf(dirs[nd++], FG_CAND_LEN, "/usr/local/cuda/lib64");
  char self[PATH_MAX];
  fg_dl_self_dir(self, sizeof self);
  if (self[0]) {
    snprintf(dirs[nd++], FG_CAND_LEN, "%.900s/../nvidia/cu13/lib", self);
    snprintf(dirs[nd++], FG_CAND_LEN, "%.900s/../../nvidia/cu13/lib", self);
    snprintf(dirs[nd++], FG_CAND_LEN, "%.900s/../nvidia/cuda_nvrtc/lib", self);
    snprintf(dirs[nd++], FG_CAND_LEN, "%.900s/../../nvidia/cuda_nvrtc/lib", self);
  }
  for (int d = 0; d < nd; d++)
    for (size_t k = 0; k < FG_ARRAY_LEN(fg_nvrtc_names) && n < cap; k++)
      snprintf(paths[n++], FG_CAND_LEN, "%.990s/%s", dirs[d], fg_nvrtc_names[k]);
  return n;
}

void fg_nvrtc_candidates(char *out, size_t size, int *then_loader) {
  char paths[FG_CAND_MAX][FG_CAND_LEN];
  int n = fg_nvrtc_paths(paths, FG_CAND_MAX, then_loader);
  out[0] = '\0';
  for (int i = 0; i < n; i++) fg_dl_note(out, size, paths[i]);
}

static int fg_is_file(const char *path, struct stat *st) {
  return stat(path, st) == 0 && S_ISREG(st->st_mode);
}

static fagen_status fg_nvrtc_not_found(fg_err *err) {
  char tried[3000];
  int then_loader;
  fg_nvrtc_candidates(tried, sizeof tried, &then_loader);
  return fg_fail(err, FAGEN_E_NO_NVRTC,
                 "NVRTC not found; tried %s%s. Install the CUDA toolkit or the "
                 "nvidia-cuda-nvrtc wheel, or set FAGEN_NVRTC to the library file",
                 tried, then_loader ? "; then the loader path (libnvrtc.so.13, .12, .so)" : "");
}

static void fg_fingerprint_of(const char *path, const struct stat *st, char *out, size_t size) {
  char real[PATH_MAX];
  const char *p = realpath(path, real) ? real : path;
  const char *base = strrchr(p, '/');
  snprintf(out, size, "%s:%lld", base ? base + 1 : p, (long long)st->st_size);
}

fagen_status fg_nvrtc_fingerprint(char *out, size_t size, fg_err *err) {
  char paths[FG_CAND_MAX][FG_CAND_LEN];
  int then_loader;
  int n = fg_nvrtc_paths(paths, FG_CAND_MAX, &then_loader);
  struct stat st;
  for (int i = 0; i < n; i++)
    if (fg_is_file(paths[i], &st)) {
      fg_fingerprint_of(paths[i], &st, out, size);
      return FAGEN_OK;
    }
  if (!then_loader) return fg_nvrtc_not_found(err);
  /* Only the loader knows: load it and ask where it came from. */
  fagen_status s = fg_nvrtc_load(err);
  if (s != FAGEN_OK) return s;
  if (!fg_is_file(fg_nv.path, &st)) return fg_fail(err, FAGEN_E_NO_NVRTC, "NVRTC path unknown");
  fg_fingerprint_of(fg_nv.path, &st, out, size);
  return FAGEN_OK;
}

static int fg_nvrtc_bind(void *h, const char *path, fg_err *err) {
#define FG_NVRTC_BIND_(field, sym)                                                             \
  *(void **)&fg_nv.field = dlsym(h, #sym);                                                     \
  if (!fg_nv.field) {                                                                          \
    fg_fail(err, FAGEN_E_NO_NVRTC, "%s has no symbol %s (not an NVRTC library?)", path, #sym); \
    return 0;                                                                                  \
  }
  FG_NVRTC_FN_LIST(FG_NVRTC_BIND_)
#undef FG_NVRTC_BIND_
  int major = 0, minor = 0;
  fg_nv.get_version(&major, &minor);
  if (major < 12) {
    fg_fail(err, FAGEN_E_NO_NVRTC, "%s is NVRTC %d.%d; fagen needs 12.0 or newer", path, major,
            minor);
    return 0;
  }
  snprintf(fg_nv.version, sizeof fg_nv.version, "%d.%d", major, minor);
  return 1;
}

fagen_status fg_nvrtc_load(fg_err *err) {
  pthread_mutex_lock(&fg_nv.mu);
  if (fg_nv.handle) {
    pthread_mutex_unlock(&fg_nv.mu);
    return FAGEN_OK;
  }
  char paths[FG_CAND_MAX][FG_CAND_LEN];
  int then_loader;
  int n = fg_nvrtc_paths(paths, FG_CAND_MAX, &then_loader);
  fagen_status st = FAGEN_E_NO_NVRTC;
  fg_err bind_err;
  bind_err.msg[0] = '\0';
  struct stat sb;
  void *h = NULL;
  for (int i = 0; i < n && !h; i++) {
    if (!fg_is_file(paths[i], &sb)) continue;
    h = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
    if (h && fg_nvrtc_bind(h, paths[i], &bind_err)) {
      fg_strlcpy(fg_nv.path, paths[i], sizeof fg_nv.path);
    } else if (h) {
      dlclose(h);
      h = NULL;
    } else if (!bind_err.msg[0]) {
      fg_fail(&bind_err, FAGEN_E_NO_NVRTC, "cannot load %s: %s", paths[i], dlerror());
    }
  }
  for (size_t k = 0; then_loader && !h && k < FG_ARRAY_LEN(fg_nvrtc_names); k++) {
    h = dlopen(fg_nvrtc_names[k], RTLD_NOW | RTLD_LOCAL);
    if (h && fg_nvrtc_bind(h, fg_nvrtc_names[k], &bind_err)) {
      Dl_info info;
      if (dladdr(*(void **)&fg_nv.get_version, &info) && info.dli_fname)
        fg_strlcpy(fg_nv.path, info.dli_fname, sizeof fg_nv.path);
      else
        fg_strlcpy(fg_nv.path, fg_nvrtc_names[k], sizeof fg_nv.path);
    } else if (h) {
      dlclose(h);
      h = NULL;
    }
  }
  if (h) {
    fg_nv.handle = h;
    st = FAGEN_OK;
  } else if (bind_err.msg[0]) {
    st = fg_fail(err, FAGEN_E_NO_NVRTC, "%s", bind_err.msg);
  } else {
    st = fg_nvrtc_not_found(err);
  }
  pthread_mutex_unlock(&fg_nv.mu);
  return st;
}

fagen_status fg_nvrtc_version(int *major, int *minor, fg_err *err) {
  fagen_status st = fg_nvrtc_load(err);
  if (st != FAGEN_OK) return st;
  fg_nv.get_version(major, minor);
  return FAGEN_OK;
}

static int fg_cmp_opt(const void *a, const void *b) { return strcmp(a, b); }

size_t fg_nvrtc_options(const fagen_target *t, char opts[][64], size_t cap) {
  size_t n = 0;
  if (cap < 7) return 0;
  snprintf(opts[n++], 64, "--gpu-architecture=sm_%d%s", t->arch, t->arch_specific ? "a" : "");
  snprintf(opts[n++], 64, "--std=c++17");
  snprintf(opts[n++], 64, "--ptxas-options=-v");
  /* Line tables make CUBINs ~4x larger (slower cache hits) for profilers only. */
  const char *li = getenv("FAGEN_LINEINFO");
  if (li && strcmp(li, "1") == 0) snprintf(opts[n++], 64, "--generate-line-info");
  /* fagen caches CUBINs itself; NVRTC's own cache (12.9+) would hand back
     results without the ptxas report the cache metadata comes from. */
  snprintf(opts[n++], 64, "--no-cache");
  /* The kernels are self-contained: skip the builtin declarations of
     textures, device-runtime calls and runtime types (NVRTC 12.4+; dropped
     at compile time for older ones).  The SASS is the same with and without
     it; it saves ~6 ms of front end a compile (0.6%). */
  snprintf(opts[n++], 64, "%s", FG_NVRTC_MINIMAL);
  qsort(opts, n, 64, fg_cmp_opt);
  return n;
}

/* Finds "<int> <word>" patterns in ptxas output. */
static int fg_find_int_before(const char *line, const char *suffix, int *out) {
  const char *p = strstr(line, suffix);
  if (!p) return 0;
  const char *q = p;
  while (q > line && q[-1] == ' ') q--;
  const char *e = q;
  while (q > line && q[-1] >= '0' && q[-1] <= '9') q--;
  if (q == e) return 0;
  *out = atoi(q);
  return 1;
}

static void fg_find_max_before(const char *line, const char *key, int *out) {
  int v;
  if (fg_find_int_before(line, key, &v) && v > *out) *out = v;
}

void fg_nvrtc_parse_ptxas(const char *log, fg_nvrtc_result *r) {
  /* -1: unknown (no report in the log) */
  r->registers = r->static_smem = r->stack_bytes = r->spill_stores = r->spill_loads = -1;
  const char *line = log;
  while (line && *line) {
    const char *nl = strchr(line, '\n');
    char buf[512];
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    if (len >= sizeof buf) len = sizeof buf - 1;
    memcpy(buf, line, len);
    buf[len] = '\0';
    /* A module may hold several kernels (the backward's): report the worst. */
    fg_find_max_before(buf, "registers", &r->registers);
    fg_find_max_before(buf, "bytes smem", &r->static_smem);
    fg_find_max_before(buf, "bytes stack frame", &r->stack_bytes);
    fg_find_max_before(buf, "bytes spill stores", &r->spill_stores);
    fg_find_max_before(buf, "bytes spill loads", &r->spill_loads);
    line = nl ? nl + 1 : NULL;
  }
}

int fg_ptxas_perf_loss(const char *log, char *line, size_t cap) {
  const char *hit = log ? strstr(log, "Potential Performance Loss") : NULL;
  if (!hit) return 0;
  /* Back to the line's start, then past "ptxas info    : " to the "(C75xx)". */
  const char *start = hit;
  while (start > log && start[-1] != '\n') start--;
  const char *paren = memchr(start, '(', (size_t)(hit - start));
  if (paren) start = paren;
  const char *end = strchr(hit, '\n');
  size_t len = end ? (size_t)(end - start) : strlen(start);
  if (cap > 0) {
    if (len >= cap) len = cap - 1;
    memcpy(line, start, len);
    line[len] = '\0';
  }
  return 1;
}

void fg_nvrtc_result_free(fg_nvrtc_result *r) {
  free(r->cubin);
  free(r->log);
  memset(r, 0, sizeof *r);
}

static double fg_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

fagen_status fg_nvrtc_compile(const char *src, const char *name, const fagen_target *t,
                              fg_nvrtc_result *out, fg_err *err) {
  memset(out, 0, sizeof *out);
  fagen_status st = fg_nvrtc_load(err);
  if (st != FAGEN_OK) {
    out->log = fg_strdup("");
    return st;
  }
  fg_strlcpy(out->version, fg_nv.version, sizeof out->version);
  char opts[8][64];
  const char *optp[8];
  size_t nopt = fg_nvrtc_options(t, opts, 8), nused = 0;
  int major = 0, minor = 0;
  fg_nv.get_version(&major, &minor);
  int has_minimal = major > 12 || (major == 12 && minor >= 4);
  for (size_t i = 0; i < nopt; i++)
    if (has_minimal || strcmp(opts[i], FG_NVRTC_MINIMAL) != 0) optp[nused++] = opts[i];

  nvrtcProgram prog;
  char file[FAGEN_VARIANT_NAME_MAX + 8];
  snprintf(file, sizeof file, "%s.cu", name);
  nvrtcResult rc = fg_nv.create(&prog, src, file, 0, NULL, NULL);
  if (rc != NVRTC_SUCCESS) {
    out->log = fg_strdup("");
    return fg_fail(err, rc == NVRTC_ERROR_OUT_OF_MEMORY ? FAGEN_E_NO_MEMORY : FAGEN_E_COMPILE,
                   "nvrtcCreateProgram failed: %s", fg_nv.get_error_string(rc));
  }
  double t0 = fg_seconds();
  rc = fg_nv.compile(prog, (int)nused, optp);
  out->seconds = fg_seconds() - t0;
  size_t log_size = 0;
  fg_nv.log_size(prog, &log_size);
  out->log = malloc(log_size + 1);
  if (!out->log) {
    fg_nv.destroy(&prog);
    return fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory");
  }
  out->log[0] = '\0';
  if (log_size) fg_nv.get_log(prog, out->log);
  out->log[log_size] = '\0';
  if (rc != NVRTC_SUCCESS) {
    fg_nv.destroy(&prog);
    /* The first error line tells most; the whole log is kept for the caller. */
    const char *e = strstr(out->log, "error");
    const char *ls = e;
    while (ls && ls > out->log && ls[-1] != '\n') ls--;
    char first[400] = "";
    if (ls) {
      const char *nl = strchr(ls, '\n');
      size_t len = nl ? (size_t)(nl - ls) : strlen(ls);
      if (len >= sizeof first) len = sizeof first - 1;
      memcpy(first, ls, len);
      first[len] = '\0';
    }
    return fg_fail(err, FAGEN_E_COMPILE, "NVRTC %s could not compile %s for sm_%d%s (%s)%s%s",
                   fg_nv.version, name, t->arch, t->arch_specific ? "a" : "",
                   fg_nv.get_error_string(rc), first[0] ? ": " : "", first);
  }
  size_t n = 0;
  fg_nv.cubin_size(prog, &n);
  out->cubin = malloc(n ? n : 1);
  if (!out->cubin) {
    fg_nv.destroy(&prog);
    return fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory");
  }
  fg_nv.get_cubin(prog, (char *)out->cubin);
  out->cubin_size = n;
  fg_nv.destroy(&prog);
  fg_nvrtc_parse_ptxas(out->log, out);
  return FAGEN_OK;
}
