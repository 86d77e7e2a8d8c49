#include "fg_test.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fg_cuda.h"
#include "fg_tool_util.h"

char *fg_test_tmpdir(void) {
  const char *base = getenv("TMPDIR");
  char tmpl[1024];
  snprintf(tmpl, sizeof tmpl, "%s/fagen-test-XXXXXX", base && *base ? base : "/tmp");
  char *d = mkdtemp(tmpl);
  return d ? strdup(d) : NULL;
}

void fg_test_rmrf(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    chmod(path, 0700);
    DIR *d = opendir(path);
    if (d) {
      struct dirent *e;
      while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[2048];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        fg_test_rmrf(sub);
      }
      closedir(d);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

char *fg_test_read(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf) {
    buf[n] = '\0';
    if (size) *size = (size_t)n;
  }
  return buf;
}

int fg_test_write(const char *path, const void *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(data, 1, size, f);
  return fclose(f) == 0 && w == size ? 0 : -1;
}

int fg_test_count_files(const char *dir, const char *needle) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (!needle || strstr(e->d_name, needle)) n++;
  }
  closedir(d);
  return n;
}

static void fg_drain(int fd, char **buf, size_t *len) {
  char chunk[4096];
  ssize_t r = read(fd, chunk, sizeof chunk);
  if (r <= 0) return;
  *buf = realloc(*buf, *len + (size_t)r + 1);
  memcpy(*buf + *len, chunk, (size_t)r);
  *len += (size_t)r;
  (*buf)[*len] = '\0';
}

int fg_test_run(const char *const argv[], const char *const env[], char **out, char **err) {
  int po[2], pe[2];
  if (pipe(po) != 0 || pipe(pe) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(po[1], 1);
    dup2(pe[1], 2);
    close(po[0]);
    close(pe[0]);
    for (size_t i = 0; env && env[i]; i++) {
      const char *eq = strchr(env[i], '=');
      char key[256];
      size_t kl = (size_t)(eq - env[i]);
      memcpy(key, env[i], kl);
      key[kl] = '\0';
      if (eq[1] == '\0')
        unsetenv(key);
      else
        setenv(key, eq + 1, 1);
    }
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(po[1]);
  close(pe[1]);
  char *ob = calloc(1, 1), *eb = calloc(1, 1);
  size_t ol = 0, el = 0;
  struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds) {
    if (poll(fds, 2, -1) < 0) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !fds[i].revents) continue;
      size_t before = i ? el : ol;
      fg_drain(fds[i].fd, i ? &eb : &ob, i ? &el : &ol);
      if ((i ? el : ol) == before) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      }
    }
  }
  int status;
  waitpid(pid, &status, 0);
  if (out) *out = ob; else free(ob);
  if (err) *err = eb; else free(eb);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int fg_test_gpu_available(const char **why) {
  static char msg[4200];
  fg_err err;
  const fg_cuda_api *cu = fg_cuda(&err);
  if (!cu) {
    snprintf(msg, sizeof msg, "no GPU: %s", err.msg);
    if (why) *why = msg;
    return 0;
  }
  int n = 0;
  if (cu->device_get_count(&n) != CUDA_SUCCESS || n == 0) {
    if (why) *why = "no GPU: the driver reports no device";
    return 0;
  }
  return 1;
}

const fg_cuda_api *fg_test_gpu_begin(char **cache_dir) {
  const char *why;
  *cache_dir = fg_test_tmpdir();
  setenv("FAGEN_CACHE_DIR", *cache_dir, 1);
  if (!fg_test_gpu_available(&why)) cr_skip_test("%s", why);
  fg_err err;
  const fg_cuda_api *cu = fg_cuda(&err);
  CUdevice dev;
  CUcontext cuctx;
  cr_assert_eq(cu->device_get(&dev, 0), CUDA_SUCCESS);
  cr_assert_eq(cu->primary_ctx_retain(&cuctx, dev), CUDA_SUCCESS);
  cr_assert_eq(cu->ctx_set_current(cuctx), CUDA_SUCCESS);
  return cu;
}

void fg_test_gpu_end(char *cache_dir) {
  fg_test_rmrf(cache_dir);
  free(cache_dir);
}

/* fg_compile_all's callback: any failure marks the run failed. */
static void fg_note_failure(void *user, size_t i, fagen_status st, size_t done) {
  (void)i, (void)done;
  if (st != FAGEN_OK) *(int *)user = 1;
}

int fg_test_compile_all(fagen_ctx *ctx, const fagen_variant *vs, int n, int threads) {
  int failed = 0;
  fg_compile_all(ctx, vs, (size_t)n, threads, fg_note_failure, &failed);
  return failed ? -1 : 0;
}

int fg_test_run_prog(const char *prog, const char *const *args, const char *const env[], char **out,
                     char **err) {
  const char *argv[32] = {prog};
  size_t n = 1;
  for (size_t i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
  argv[n] = NULL;
  return fg_test_run(argv, env, out, err);
}
