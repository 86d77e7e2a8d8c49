/* fagen-bench-runtime: the runtime's own costs, as the runtime issue asks.
 *   1. cold compile of one default forward variant (fresh process, no cache)
 *   2. a new process that finds it in the disk cache: ready to launch
 *   3. an in-process hit (the kernel already loaded)       [GPU]
 *   4. host-side overhead of a forward call                [GPU]
 * Each figure is the median over repeated fresh processes or calls; the
 * table goes to stdout.  Usage: fagen-bench-runtime [--reps N] [VARIANT]
 * (--help says more). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fagen.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *x, int n) {
  qsort(x, (size_t)n, sizeof *x, cmp_double);
  return n % 2 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
}

/* Runs fn in a fresh child process; the child writes two doubles back. */
typedef void (*child_fn)(const fagen_variant *v, double out[2]);

static int in_child(child_fn fn, const fagen_variant *v, double out[2]) {
  int p[2];
  if (pipe(p) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    double r[2] = {-1, -1};
    fn(v, r);
    ssize_t w = write(p[1], r, sizeof r);
    _exit(w == (ssize_t)sizeof r ? 0 : 1);
  }
  close(p[1]);
  ssize_t got = read(p[0], out, 2 * sizeof(double));
  close(p[0]);
  int st;
  waitpid(pid, &st, 0);
  return got == 2 * (ssize_t)sizeof(double) && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static void cold_compile(const fagen_variant *v, double out[2]) {
  setenv("FAGEN_CACHE_DISABLE", "1", 1);
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_kernel_info info;
  double t0 = now();
  if (fagen_compile(ctx, v, &info) != FAGEN_OK) {
    fprintf(stderr, "compile failed: %s\n", fagen_errmsg(ctx));
    return;
  }
  out[0] = now() - t0;            /* whole call: generation, NVRTC load, compile */
  out[1] = info.compile_seconds;  /* NVRTC alone */
  fagen_ctx_destroy(ctx);
}

static int gpu;

/* Removes the benchmark's cache folder (a mkdtemp name: no quoting needed). */
static int remove_dir(const char *dir) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd);
}

static void disk_hit(const fagen_variant *v, double out[2]) {
  if (gpu) cudaFree(0); /* driver and context start-up are every CUDA program's cost */
  double t0 = now();
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_kernel_info info;
  fagen_status st = fagen_compile(ctx, v, &info);
  out[0] = now() - t0;
  if (st != FAGEN_OK || !info.from_disk_cache) {
    out[0] = -1;
    return;
  }
  if (gpu) {
    fagen_ctx *c2;
    fagen_ctx_create(&c2);
    double t1 = now();
    st = fagen_prepare(c2, v, 1); /* disk -> loaded module, ready to launch */
    out[1] = st == FAGEN_OK ? now() - t1 : -1;
    fagen_ctx_destroy(c2);
  }
  fagen_ctx_destroy(ctx);
}

static const char usage[] =
    "usage: fagen-bench-runtime [--reps N] [VARIANT]\n"
    "Measures the runtime's own costs and prints a table (medians):\n"
    "  cold compile of VARIANT (default: the d128 bf16 causal forward that a call\n"
    "  selects on this machine's GPU, or on sm_80 without one) in fresh processes\n"
    "  with no cache; a new process that finds it in the disk cache; and, with a\n"
    "  GPU, an in-process hit and the host time of one forward call.\n"
    "  --reps N   fresh processes for the cold compile, 1 to 100 (default 7; the\n"
    "             disk-cache hit takes 3 N)\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

int main(int argc, char **argv) {
  int reps = 7;
  const char *vname = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps")) {
      char *end = NULL;
      long r = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
      if (i + 1 >= argc || end == argv[i + 1] || *end || r < 1 || r > 100) {
        fprintf(stderr, "fagen-bench-runtime: --reps takes a count from 1 to 100, not '%s'\n%s",
                i + 1 < argc ? argv[i + 1] : "", usage);
        return 2;
      }
      reps = (int)r;
      i++;
    } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      fputs(usage, stdout);
      return 0;
    } else if (argv[i][0] == '-' || vname) {
      fprintf(stderr, "fagen-bench-runtime: unexpected argument '%s'\n%s", argv[i], usage);
      return 2;
    } else {
      vname = argv[i];
    }
  }
  /* Probe in a child: a process that initialized CUDA must not fork children
     that use it, and the measurements below fork. */
  pid_t probe = fork();
  if (probe == 0) {
    int ndev = 0;
    _exit(cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0 ? 0 : 1);
  }
  int pst;
  waitpid(probe, &pst, 0);
  gpu = WIFEXITED(pst) && WEXITSTATUS(pst) == 0;
  fagen_variant v;
  if (vname) {
    char why[512];
    if (fagen_variant_parse(vname, &v) != FAGEN_OK) {
      fprintf(stderr, "fagen-bench-runtime: %s\n", fagen_last_error());
      return 2;
    }
    if (fagen_variant_validate(&v, why, sizeof why) != FAGEN_OK) {
      fprintf(stderr, "fagen-bench-runtime: %s is not a valid variant: %s\n", vname, why);
      return 2;
    }
  } else {
    /* The default d128 bf16 causal forward kernel for this machine's GPU (or sm_80). */
    fagen_ctx *ctx;
    fagen_ctx_create(&ctx);
    fagen_attention_args a;
    fagen_attention_args_init(&a);
    a.batch = a.heads_q = a.heads_kv = 1;
    a.seqlen_q = a.seqlen_k = 1024;
    a.head_dim = 128;
    a.causal = 1;
    fagen_device_class t = {"", {80, 0}, 0}; /* no GPU: the heuristic for sm_80 */
    if (gpu) {
      /* fork before CUDA touches this process: children initialize their own */
      int p[2];
      if (pipe(p) != 0) return 1;
      pid_t pid = fork();
      if (pid == 0) {
        fagen_variant sel;
        cudaFree(0);
        if (fagen_attention_select(ctx, &a, NULL, &sel, NULL) != FAGEN_OK) _exit(1);
        _exit(write(p[1], &sel, sizeof sel) == sizeof sel ? 0 : 1);
      }
      close(p[1]);
      if (read(p[0], &v, sizeof v) != sizeof v) return 1;
      waitpid(pid, NULL, 0);
    } else if (fagen_attention_select(ctx, &a, &t, &v, NULL) != FAGEN_OK) {
      return 1;
    }
    fagen_ctx_destroy(ctx);
  }
  char name[FAGEN_VARIANT_NAME_MAX];
  fagen_variant_name(&v, name, sizeof name);
  char dir[] = "/tmp/fagen-bench-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  setenv("FAGEN_CACHE_DIR", dir, 1);

  /* reps cold compiles, 3 reps disk hits (reps <= 100) */
  double whole[100], nvrtc[100], hit[300], load[300];
  int n_cold = 0, n_hit = 0;
  for (int r = 0; r < reps; r++) {
    double o[2];
    if (in_child(cold_compile, &v, o) == 0) whole[n_cold] = o[0], nvrtc[n_cold++] = o[1];
  }
  /* populate the disk cache once, then new processes hit it */
  setenv("FAGEN_CACHE_DISABLE", "0", 1);
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_compile(ctx, &v, NULL);
  fagen_ctx_destroy(ctx);
  for (int r = 0; r < reps * 3; r++) {
    double o[2] = {-1, -1};
    if (in_child(disk_hit, &v, o) == 0 && o[0] >= 0) hit[n_hit] = o[0], load[n_hit++] = o[1];
  }
  if (n_cold == 0 || n_hit == 0) {
    fprintf(stderr, "fagen-bench-runtime: %s: %s\n", name,
            n_cold == 0 ? "every cold compile failed" : "no new process found it in the disk cache");
    remove_dir(dir);
    return 1;
  }
  printf("fagen-bench-runtime: %s, %s\n", name, gpu ? "GPU present" : "no GPU");
  printf("| measure | median | target | n |\n|---|---|---|---|\n");
  if (n_cold) {
    /* median() sorts: min and max are then the ends (the spread shows how
       steady this machine's CPU was during the run). */
    double m = median(nvrtc, n_cold);
    printf("| cold compile, NVRTC time | %.3f s (min %.3f, max %.3f) | <= 1.0 s | %d |\n", m,
           nvrtc[0], nvrtc[n_cold - 1], n_cold);
    m = median(whole, n_cold);
    printf("| cold compile, whole fagen_compile | %.3f s (min %.3f, max %.3f) | | %d |\n", m,
           whole[0], whole[n_cold - 1], n_cold);
  }
  if (n_hit) {
    printf("| new process, disk-cache hit (ctx + lookup) | %.2f ms | <= 5 ms | %d |\n",
           median(hit, n_hit) * 1e3, n_hit);
    if (gpu)
      printf("| new process, disk hit to loaded kernel (fagen_prepare) | %.2f ms | <= 5 ms | %d |\n",
             median(load, n_hit) * 1e3, n_hit);
  }
  if (gpu) {
    cudaFree(0);
    fagen_ctx_create(&ctx);
    if (fagen_prepare(ctx, &v, 1) != FAGEN_OK) {
      fprintf(stderr, "prepare: %s\n", fagen_errmsg(ctx));
      return 1;
    }
    double t[9];
    for (int k = 0; k < 9; k++) {
      double t0 = now();
      for (int i = 0; i < 10000; i++) fagen_prepare(ctx, &v, 1);
      t[k] = (now() - t0) / 10000;
    }
    printf("| in-process hit (fagen_prepare of a loaded kernel) | %.2f us | <= 2 us | 9x10000 |\n",
           median(t, 9) * 1e6);
    /* Host time of a forward call on a small problem, the queue kept short. */
    int S = 128, H = 4, D = v.head_dim;
    void *q, *k, *vv, *o;
    size_t bytes = (size_t)S * H * D * 2;
    cudaMalloc(&q, bytes), cudaMalloc(&k, bytes), cudaMalloc(&vv, bytes), cudaMalloc(&o, bytes);
    cudaMemset(q, 0, bytes), cudaMemset(k, 0, bytes), cudaMemset(vv, 0, bytes);
    fagen_attention_args a;
    fagen_attention_args_init(&a);
    a.dtype = v.dtype;
    a.batch = 1;
    a.seqlen_q = a.seqlen_k = S;
    a.heads_q = a.heads_kv = H;
    a.head_dim = D;
    a.causal = v.causal;
    a.q = q, a.k = k, a.v = vv, a.o = o;
    for (int k2 = 0; k2 < 9; k2++) {
      double sum = 0;
      for (int i = 0; i < 200; i++) {
        double t0 = now();
        if (fagen_attention_forward(ctx, &a, NULL) != FAGEN_OK) {
          fprintf(stderr, "forward: %s\n", fagen_errmsg(ctx));
          return 1;
        }
        sum += now() - t0;
        if (i % 50 == 49) cudaDeviceSynchronize();
      }
      t[k2] = sum / 200;
    }
    printf("| host time of one forward call (validate, select, launch) | %.2f us | <= 10 us | 9x200 |\n",
           median(t, 9) * 1e6);
    fagen_ctx_destroy(ctx);
  }
  return remove_dir(dir) == 0 ? 0 : 1;
}
