#include "fg_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fg_sha256.h"

static const unsigned char fg_magic[8] = {'F', 'A', 'G', 'E', 'N', 'K', 'C', 0};
#define FG_CACHE_MAX_FILE ((size_t)512 << 20)

enum {
  FG_TAG_NAME = 1,
  FG_TAG_TARGET = 2,
  FG_TAG_NVRTC = 3,
  FG_TAG_CUBIN = 4,
  FG_TAG_LOG = 5,
  FG_TAG_INTS = 6,
  FG_TAG_SECONDS = 7
};

/* ---- configuration ------------------------------------------------------ */

static unsigned long long fg_parse_size(const char *s, int *ok) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  *ok = errno == 0 && end != s && s[0] != '-';
  unsigned long long mult = 1;
  if (*end == 'K' || *end == 'k') mult = 1ull << 10, end++;
  else if (*end == 'M' || *end == 'm') mult = 1ull << 20, end++;
  else if (*end == 'G' || *end == 'g') mult = 1ull << 30, end++;
  if (mult > 1 && (*end == 'i' || *end == 'I')) end++;
  if (mult > 1 && (*end == 'B' || *end == 'b')) end++;
  if (*end != '\0') *ok = 0;
  return v * mult;
}

void fg_cache_init(fg_cache *c, const fg_log *log) {
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->mu, NULL);
  c->log = log;
  c->max_bytes = FG_CACHE_DEFAULT_MAX;
  const char *dis = getenv("FAGEN_CACHE_DISABLE");
  c->disabled = dis && (strcmp(dis, "1") == 0 || strcmp(dis, "true") == 0 || strcmp(dis, "yes") == 0);
  const char *dir = getenv("FAGEN_CACHE_DIR");
  const char *xdg = getenv("XDG_CACHE_HOME");
  const char *home = getenv("HOME");
  if (dir && *dir)
    snprintf(c->root, sizeof c->root, "%s", dir);
  else if (xdg && xdg[0] == '/')
    snprintf(c->root, sizeof c->root, "%.1000s/fagen", xdg);
  else if (home && *home)
    snprintf(c->root, sizeof c->root, "%.1000s/.cache/fagen", home);
  if (c->root[0]) snprintf(c->dir, sizeof c->dir, "%s/kernels", c->root);
  const char *max = getenv("FAGEN_CACHE_MAX_BYTES");
  if (max && *max) {
    int ok;
    unsigned long long v = fg_parse_size(max, &ok);
    if (ok)
      c->max_bytes = v;
    else
      fg_logf(log, FAGEN_LOG_WARN, "ignoring FAGEN_CACHE_MAX_BYTES=%s (not a size); using 1 GiB",
              max);
  }
}

void fg_cache_destroy(fg_cache *c) { pthread_mutex_destroy(&c->mu); }

int fg_cache_usable(fg_cache *c) {
  pthread_mutex_lock(&c->mu);
  int ok = !c->disabled && !c->degraded && c->dir[0];
  pthread_mutex_unlock(&c->mu);
  return ok;
}

static void fg_cache_degrade(fg_cache *c, const char *why) {
  pthread_mutex_lock(&c->mu);
  int first = !c->degraded;
  c->degraded = 1;
  pthread_mutex_unlock(&c->mu);
  if (first)
    fg_logf(c->log, FAGEN_LOG_WARN,
            "kernel cache %s is not usable (%s); keeping compiled kernels in memory only",
            c->dir, why);
}

static void fg_cache_path(const fg_cache *c, const unsigned char key[32], const char *name,
                          const char *ext, char *out, size_t size) {
  char hex[17];
  fg_hex(key, 8, hex);
  snprintf(out, size, "%s/%s.%s.%s", c->dir, name, hex, ext);
}

static int fg_mkdirs(const char *path) {
  char buf[1200];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++)
    if (buf[i] == '/' || buf[i] == '\0') {
      char ch = buf[i];
      buf[i] = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
      buf[i] = ch;
    }
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* ---- encoding ----------------------------------------------------------- */

static void fg_put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void fg_put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t fg_get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t fg_get_u64(const unsigned char *p) {
  return (uint64_t)fg_get_u32(p) | (uint64_t)fg_get_u32(p + 4) << 32;
}

static void fg_record(fg_buf *b, uint32_t tag, const void *data, size_t n) {
  unsigned char h[8];
  fg_put_u32(h, tag);
  fg_put_u32(h + 4, (uint32_t)n);
  fg_buf_append(b, h, 8);
  fg_buf_append(b, data, n);
}

int fg_cache_encode(const unsigned char key[32], const fg_cache_blob *blob, fg_buf *out) {
  fg_buf payload;
  fg_buf_init(&payload);
  const fg_cache_meta *m = &blob->meta;
  fg_record(&payload, FG_TAG_NAME, m->name, strlen(m->name));
  fg_record(&payload, FG_TAG_TARGET, m->target, strlen(m->target));
  fg_record(&payload, FG_TAG_NVRTC, m->nvrtc_version, strlen(m->nvrtc_version));
  fg_record(&payload, FG_TAG_CUBIN, blob->cubin, blob->cubin_size);
  if (blob->log) fg_record(&payload, FG_TAG_LOG, blob->log, strlen(blob->log));
  const int32_t ints[7] = {m->registers, m->spill_stores, m->spill_loads, m->stack_bytes,
                           m->static_smem, m->threads,    m->dynamic_smem};
  unsigned char ib[28];
  for (int i = 0; i < 7; i++) fg_put_u32(ib + 4 * i, (uint32_t)ints[i]);
  fg_record(&payload, FG_TAG_INTS, ib, sizeof ib);
  uint64_t bits;
  memcpy(&bits, &m->compile_seconds, 8);
  unsigned char sb[8];
  fg_put_u64(sb, bits);
  fg_record(&payload, FG_TAG_SECONDS, sb, 8);
  if (payload.oom) {
    fg_buf_free(&payload);
    return 0;
  }
  unsigned char h[FG_CACHE_HEADER];
  memset(h, 0, sizeof h);
  memcpy(h, fg_magic, 8);
  fg_put_u32(h + 8, FG_CACHE_FORMAT);
  fg_put_u32(h + 12, FG_CACHE_HEADER);
  memcpy(h + 16, key, 32);
  fg_put_u64(h + 48, payload.len);
  fg_sha256_buf(payload.data, payload.len, h + 56);
  fg_buf_append(out, h, sizeof h);
  fg_buf_append(out, payload.data, payload.len);
  fg_buf_free(&payload);
  return !out->oom;
}

static char *fg_strndup_(const unsigned char *p, size_t n) {
  char *s = malloc(n + 1);
  if (s) {
    memcpy(s, p, n);
    s[n] = '\0';
  }
  return s;
}

int fg_cache_decode(const unsigned char *data, size_t size, const unsigned char key[32],
                    fg_cache_blob *out, char *why, size_t why_size) {
  memset(out, 0, sizeof *out);
#define FG_BAD(reason)                            \
  do {                                            \
    snprintf(why, why_size, "%s", reason);        \
    fg_cache_blob_free(out);                      \
    return 0;                                     \
  } while (0)
  if (size < FG_CACHE_HEADER) FG_BAD(size == 0 ? "empty file" : "truncated header");
  if (memcmp(data, fg_magic, 8) != 0) FG_BAD("not a fagen cache file");
  if (fg_get_u32(data + 8) != FG_CACHE_FORMAT) FG_BAD("other format version");
  if (fg_get_u32(data + 12) != FG_CACHE_HEADER) FG_BAD("bad header size");
  if (key && memcmp(data + 16, key, 32) != 0) FG_BAD("key mismatch");
  uint64_t plen = fg_get_u64(data + 48);
  if (plen != size - FG_CACHE_HEADER) FG_BAD("truncated or padded payload");
  unsigned char sum[32];
  const unsigned char *p = data + FG_CACHE_HEADER;
  fg_sha256_buf(p, (size_t)plen, sum);
  if (memcmp(sum, data + 56, 32) != 0) FG_BAD("checksum mismatch");
  size_t off = 0;
  int have_name = 0;
  while (off < plen) {
    if (plen - off < 8) FG_BAD("truncated record");
    uint32_t tag = fg_get_u32(p + off), len = fg_get_u32(p + off + 4);
    off += 8;
    if (len > plen - off) FG_BAD("record overruns payload");
    const unsigned char *r = p + off;
    switch (tag) {
      case FG_TAG_NAME:
        if (len >= sizeof out->meta.name) FG_BAD("name too long");
        memcpy(out->meta.name, r, len);
        out->meta.name[len] = '\0';
        have_name = 1;
        break;
      case FG_TAG_TARGET:
        if (len >= sizeof out->meta.target) FG_BAD("target too long");
        memcpy(out->meta.target, r, len);
        out->meta.target[len] = '\0';
        break;
      case FG_TAG_NVRTC:
        if (len >= sizeof out->meta.nvrtc_version) FG_BAD("version too long");
        memcpy(out->meta.nvrtc_version, r, len);
        out->meta.nvrtc_version[len] = '\0';
        break;
      case FG_TAG_CUBIN:
        free(out->cubin);
        out->cubin = malloc(len ? len : 1);
        if (!out->cubin) FG_BAD("out of memory");
        memcpy(out->cubin, r, len);
        out->cubin_size = len;
        break;
      case FG_TAG_LOG:
        free(out->log);
        out->log = fg_strndup_(r, len);
        if (!out->log) FG_BAD("out of memory");
        break;
      case FG_TAG_INTS:
        if (len < 28) FG_BAD("short resource record");
        out->meta.registers = (int32_t)fg_get_u32(r);
        out->meta.spill_stores = (int32_t)fg_get_u32(r + 4);
        out->meta.spill_loads = (int32_t)fg_get_u32(r + 8);
        out->meta.stack_bytes = (int32_t)fg_get_u32(r + 12);
        out->meta.static_smem = (int32_t)fg_get_u32(r + 16);
        out->meta.threads = (int32_t)fg_get_u32(r + 20);
        out->meta.dynamic_smem = (int32_t)fg_get_u32(r + 24);
        break;
      case FG_TAG_SECONDS: {
        if (len < 8) FG_BAD("short time record");
        uint64_t bits = fg_get_u64(r);
        memcpy(&out->meta.compile_seconds, &bits, 8);
        break;
      }
      default: break; /* a later format's record: skip */
    }
    off += len;
  }
  if (!have_name) FG_BAD("no kernel name");
  if (!out->cubin || out->cubin_size < 4 || memcmp(out->cubin, "\177ELF", 4) != 0)
    FG_BAD("no valid CUBIN");
#undef FG_BAD
  return 1;
}

void fg_cache_blob_free(fg_cache_blob *b) {
  free(b->cubin);
  free(b->log);
  b->cubin = NULL;
  b->log = NULL;
  b->cubin_size = 0;
}

/* ---- files -------------------------------------------------------------- */

static int fg_read_all(int fd, unsigned char **data, size_t *size) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > FG_CACHE_MAX_FILE)
    return 0;
  size_t n = (size_t)st.st_size;
  unsigned char *buf = malloc(n ? n : 1);
  if (!buf) return 0;
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  *data = buf;
  *size = got;
  return 1;
}

int fg_cache_load(fg_cache *c, const unsigned char key[32], const char *name, fg_cache_blob *out) {
  if (!fg_cache_usable(c)) return 0;
  char path[1300];
  fg_cache_path(c, key, name, "fgk", path, sizeof path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  unsigned char *data = NULL;
  size_t size = 0;
  int ok = fg_read_all(fd, &data, &size);
  close(fd);
  if (!ok) {
    free(data);
    fg_logf(c->log, FAGEN_LOG_WARN, "cannot read cache file %s; recompiling", path);
    return 0;
  }
  char why[128];
  ok = fg_cache_decode(data, size, key, out, why, sizeof why);
  free(data);
  if (!ok) {
    fg_logf(c->log, FAGEN_LOG_WARN, "ignoring damaged cache file %s (%s); recompiling", path, why);
    return 0;
  }
  utimensat(AT_FDCWD, path, NULL, 0); /* most recently used */
  return 1;
}

int fg_cache_store(fg_cache *c, const unsigned char key[32], const fg_cache_blob *blob) {
  if (!fg_cache_usable(c)) return 0;
  char why[1400];
  if (fg_mkdirs(c->dir) != 0) {
    snprintf(why, sizeof why, "cannot create it: %s", strerror(errno));
    fg_cache_degrade(c, why);
    return 0;
  }
  fg_buf b;
  fg_buf_init(&b);
  if (!fg_cache_encode(key, blob, &b)) {
    fg_buf_free(&b);
    return 0;
  }
  char tmp[1300], path[1300];
  fg_cache_path(c, key, blob->meta.name, "fgk", path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s/.tmp.%.100s.XXXXXX", c->dir, blob->meta.name);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    snprintf(why, sizeof why, "cannot create a file there: %s", strerror(errno));
    fg_buf_free(&b);
    fg_cache_degrade(c, why);
    return 0;
  }
  size_t off = 0;
  int ok = 1;
  while (off < b.len) {
    ssize_t w = write(fd, b.data + off, b.len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      snprintf(why, sizeof why, "writing failed: %s", w < 0 ? strerror(errno) : "no progress");
      ok = 0;
      break;
    }
    off += (size_t)w;
  }
  if (ok && (fchmod(fd, 0644) != 0 || fsync(fd) != 0)) {
    snprintf(why, sizeof why, "fsync failed: %s", strerror(errno));
    ok = 0;
  }
  if (close(fd) != 0 && ok) {
    snprintf(why, sizeof why, "close failed: %s", strerror(errno));
    ok = 0;
  }
  if (ok && rename(tmp, path) != 0) {
    snprintf(why, sizeof why, "rename failed: %s", strerror(errno));
    ok = 0;
  }
  fg_buf_free(&b);
  if (!ok) {
    unlink(tmp);
    fg_cache_degrade(c, why);
    return 0;
  }
  fg_logf(c->log, FAGEN_LOG_DEBUG, "cache store %s", path);
  return 1;
}

void fg_cache_remove(fg_cache *c, const unsigned char key[32], const char *name) {
  if (!fg_cache_usable(c)) return;
  char path[1300];
  fg_cache_path(c, key, name, "fgk", path, sizeof path);
  unlink(path);
}

int fg_cache_lock(fg_cache *c, const unsigned char key[32], const char *name) {
  if (!fg_cache_usable(c)) return -1;
  char why[1400];
  if (fg_mkdirs(c->dir) != 0) {
    snprintf(why, sizeof why, "cannot create it: %s", strerror(errno));
    fg_cache_degrade(c, why);
    return -1;
  }
  char path[1300];
  fg_cache_path(c, key, name, "lock", path, sizeof path);
  for (int attempt = 0; attempt < 1000; attempt++) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      snprintf(why, sizeof why, "cannot create lock file: %s", strerror(errno));
      fg_cache_degrade(c, why);
      return -1;
    }
    int r;
    while ((r = flock(fd, LOCK_EX)) != 0 && errno == EINTR) {
    }
    if (r != 0) {
      close(fd);
      return -1;
    }
    /* The holder before us removes the file before releasing it: if the path
       no longer names the file we locked, lock the new one instead. */
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
      return fd;
    close(fd);
  }
  return -1;
}

void fg_cache_unlock(fg_cache *c, int fd, const unsigned char key[32], const char *name) {
  if (fd < 0) return;
  char path[1300];
  fg_cache_path(c, key, name, "lock", path, sizeof path);
  unlink(path); /* while still holding it: see fg_cache_lock */
  flock(fd, LOCK_UN);
  close(fd);
}

/* ---- listing, eviction -------------------------------------------------- */

static int fg_ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

fagen_status fg_cache_scan(fg_cache *c, int decode, fg_cache_file **files, size_t *n, fg_err *err) {
  *files = NULL;
  *n = 0;
  if (!c->dir[0]) return FAGEN_OK;
  DIR *d = opendir(c->dir);
  if (!d) {
    if (errno == ENOENT) return FAGEN_OK;
    return fg_fail(err, FAGEN_E_IO, "cannot list %s: %s", c->dir, strerror(errno));
  }
  size_t cap = 0;
  struct dirent *e;
  fagen_status st = FAGEN_OK;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !fg_ends_with(e->d_name, ".fgk")) continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 64;
      fg_cache_file *p = realloc(*files, cap * sizeof *p);
      if (!p) {
        st = fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory");
        break;
      }
      *files = p;
    }
    fg_cache_file *f = &(*files)[*n];
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s/%s", c->dir, e->d_name);
    /* NAME.KEY16.fgk */
    fg_strlcpy(f->name, e->d_name, sizeof f->name);
    char *dot = strchr(f->name, '.');
    if (dot) *dot = '\0';
    struct stat sb;
    if (stat(f->path, &sb) != 0) continue;
    f->bytes = (long long)sb.st_size;
    f->mtime = (double)sb.st_mtim.tv_sec + (double)sb.st_mtim.tv_nsec * 1e-9;
    if (decode) {
      int fd = open(f->path, O_RDONLY | O_CLOEXEC);
      unsigned char *data = NULL;
      size_t size = 0;
      if (fd >= 0 && fg_read_all(fd, &data, &size)) {
        fg_cache_blob blob;
        char why[128];
        f->valid = fg_cache_decode(data, size, NULL, &blob, why, sizeof why);
        if (f->valid) f->meta = blob.meta;
        fg_cache_blob_free(&blob);
      }
      if (fd >= 0) close(fd);
      free(data);
    }
    (*n)++;
  }
  closedir(d);
  return st;
}

static int fg_by_mtime(const void *a, const void *b) {
  const fg_cache_file *x = a, *y = b;
  if (x->mtime != y->mtime) return x->mtime < y->mtime ? -1 : 1;
  return strcmp(x->path, y->path);
}

/* Temporary files of writers that died: removed after an hour. */
static void fg_cache_sweep_tmp(fg_cache *c) {
  DIR *d = opendir(c->dir);
  if (!d) return;
  struct dirent *e;
  time_t now = time(NULL);
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, ".tmp.", 5) != 0) continue;
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", c->dir, e->d_name);
    struct stat sb;
    if (stat(path, &sb) == 0 && now - sb.st_mtime > 3600) unlink(path);
  }
  closedir(d);
}

void fg_cache_evict(fg_cache *c) {
  if (!fg_cache_usable(c)) return;
  fg_cache_sweep_tmp(c);
  fg_cache_file *files;
  size_t n;
  fg_err err;
  if (fg_cache_scan(c, 0, &files, &n, &err) != FAGEN_OK) return;
  unsigned long long total = 0;
  for (size_t i = 0; i < n; i++) total += (unsigned long long)files[i].bytes;
  if (total > c->max_bytes) {
    qsort(files, n, sizeof *files, fg_by_mtime);
    for (size_t i = 0; i + 1 < n && total > c->max_bytes; i++) { /* keep the newest */
      if (unlink(files[i].path) == 0) {
        total -= (unsigned long long)files[i].bytes;
        fg_logf(c->log, FAGEN_LOG_INFO, "cache evicted %s (%lld bytes, least recently used)",
                files[i].name, files[i].bytes);
      }
    }
  }
  free(files);
}

fagen_status fg_cache_clear(fg_cache *c, size_t *removed, fg_err *err) {
  *removed = 0;
  fg_cache_file *files;
  size_t n;
  fagen_status st = fg_cache_scan(c, 0, &files, &n, err);
  if (st != FAGEN_OK) return st;
  for (size_t i = 0; i < n; i++) {
    if (unlink(files[i].path) == 0)
      (*removed)++;
    else if (errno != ENOENT)
      st = fg_fail(err, FAGEN_E_IO, "cannot remove %s: %s", files[i].path, strerror(errno));
  }
  free(files);
  if (c->dir[0]) fg_cache_sweep_tmp(c);
  return st;
}
