#include "cli_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void cli_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: error: ", prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

int cli_opt_value(const char *prog, int argc, char **argv, int *i, const char *name,
                  const char *short_name, const char **value) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  int long_match = strncmp(a, name, n) == 0 && (a[n] == '\0' || a[n] == '=');
  int short_match = short_name && strcmp(a, short_name) == 0;
  if (short_name && !short_match && strncmp(a, short_name, strlen(short_name)) == 0 &&
      a[1] != '-') { /* "-j4" */
    *value = a + strlen(short_name);
    return 1;
  }
  if (!long_match && !short_match) return 0;
  if (long_match && a[n] == '=') {
    *value = a + n + 1;
    return 1;
  }
  if (*i + 1 >= argc) {
    cli_error(prog, "option %s needs a value", a);
    return -1;
  }
  *value = argv[++*i];
  return 1;
}

int cli_parse_targets(const char *prog, const char *list, fagen_target *targets, int cap) {
  int n = 0;
  const char *p = list;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    char tok[32];
    if (len == 0 || len >= sizeof tok) {
      cli_error(prog, "bad target list '%s' (expected e.g. sm_80,sm_90a)", list);
      return -1;
    }
    memcpy(tok, p, len);
    tok[len] = '\0';
    if (n == cap) {
      cli_error(prog, "too many targets in '%s'", list);
      return -1;
    }
    if (fagen_target_parse(tok, &targets[n]) != FAGEN_OK) {
      cli_error(prog, "%s", fagen_last_error());
      return -1;
    }
    for (int i = 0; i < n; i++)
      if (targets[i].arch == targets[n].arch &&
          targets[i].arch_specific == targets[n].arch_specific) {
        cli_error(prog, "target %s is listed twice", tok);
        return -1;
      }
    n++;
    p += len;
    if (*p == ',') p++;
  }
  if (n == 0) {
    cli_error(prog, "empty target list");
    return -1;
  }
  return n;
}

int cli_mkdirs(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char c = buf[i];
      buf[i] = '\0';
      if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
      buf[i] = c;
    }
  }
  struct stat st;
  if (stat(path, &st) != 0) return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return 0;
}

int cli_write_atomic(const char *dir, const char *name, const void *data, size_t len, char *err,
                     size_t errsize) {
  char tmp[4096], final[4096];
  snprintf(final, sizeof final, "%s/%s", dir, name);
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp.XXXXXX", dir, name);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    snprintf(err, errsize, "cannot create a file in %s: %s", dir, strerror(errno));
    return -1;
  }
  const char *p = data;
  size_t left = len;
  while (left) {
    ssize_t w = write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      snprintf(err, errsize, "cannot write %s: %s", final, strerror(errno));
      close(fd);
      unlink(tmp);
      return -1;
    }
    p += w;
    left -= (size_t)w;
  }
  if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) {
    snprintf(err, errsize, "cannot finish %s: %s", final, strerror(errno));
    close(fd);
    unlink(tmp);
    return -1;
  }
  if (close(fd) != 0 || rename(tmp, final) != 0) {
    snprintf(err, errsize, "cannot write %s: %s", final, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

int cli_stderr_is_tty(void) { return isatty(2); }

double cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
