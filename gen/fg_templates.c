#include "fg_templates.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_gen.h"
#include "fg_lua.h"
#include "fg_sha256.h"

#define FG_TEMPLATE_MAX_BYTES (4u << 20)

static const char *fg_template_dir(void) {
  const char *d = getenv("FAGEN_TEMPLATE_DIR");
  return d && *d ? d : NULL;
}

static fagen_status fg_read_file(const char *path, const char *name, fg_buf *text, fg_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT)
      return fg_fail(err, FAGEN_E_TEMPLATE, "no template named '%s' (looked for %s)", name, path);
    return fg_fail(err, FAGEN_E_IO, "cannot open template %s: %s", path, strerror(errno));
  }
  char chunk[8192];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (text->len + n > FG_TEMPLATE_MAX_BYTES) {
      fclose(f);
      return fg_fail(err, FAGEN_E_TEMPLATE, "template %s is larger than %u bytes", path,
                     FG_TEMPLATE_MAX_BYTES);
    }
    fg_buf_append(text, chunk, n);
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) return fg_fail(err, FAGEN_E_IO, "cannot read template %s", path);
  if (text->oom) return fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory reading %s", path);
  return FAGEN_OK;
}

fagen_status fg_template_read(void *user, const char *name, fg_buf *text, fg_err *err) {
  (void)user;
  if (!fg_tpl_name_ok(name)) return fg_fail(err, FAGEN_E_TEMPLATE, "bad template name '%s'", name);
  const char *dir = fg_template_dir();
  if (dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return fg_read_file(path, name, text, err);
  }
  for (size_t i = 0; i < fg_embedded_templates_count; i++)
    if (strcmp(fg_embedded_templates[i].name, name) == 0) {
      fg_buf_append(text, fg_embedded_templates[i].data, fg_embedded_templates[i].size);
      return text->oom ? fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory") : FAGEN_OK;
    }
  return fg_fail(err, FAGEN_E_TEMPLATE, "no template named '%s' is built into fagen", name);
}

static void fg_hash_entry(fg_sha256 *s, const char *name, const void *data, size_t n) {
  unsigned char len[8];
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)((unsigned long long)n >> (8 * i));
  fg_sha256_update(s, name, strlen(name) + 1);
  fg_sha256_update(s, len, sizeof len);
  fg_sha256_update(s, data, n);
}

static fagen_status fg_templates_hash_compute(char hex[65], fg_err *err);

/* The built-in set never changes: hashed once per process (it cannot fail). */
static char fg_builtin_hash[65];
static pthread_once_t fg_builtin_hash_once = PTHREAD_ONCE_INIT;
static void fg_builtin_hash_init(void) { fg_templates_hash_compute(fg_builtin_hash, NULL); }

fagen_status fg_templates_hash(char hex[65], fg_err *err) {
  if (fg_template_dir()) return fg_templates_hash_compute(hex, err);
  pthread_once(&fg_builtin_hash_once, fg_builtin_hash_init);
  memcpy(hex, fg_builtin_hash, 65);
  return FAGEN_OK;
}

/* The templates the tabled kernels are generated from, sorted by name.
 * Tuning tables hold entries for the forward and backward families, so this
 * is the set whose change makes a table stale: every template of fwd, fwdwg,
 * bwd, bwddet and bwdwg.  test_generate checks that those kernels' sources
 * include exactly these. */
const char *const fg_table_templates[] = {
    "bwd_aux.cuh.tpl",  "bwd_params.cuh.tpl", "bwd_sm80.cu.tpl",  "bwd_sm90.cu.tpl",
    "common.cuh.tpl",   "features.cuh.tpl",   "fwd_params.cuh.tpl", "fwd_sm80.cu.tpl",
    "fwd_sm90.cu.tpl",  "sm80_mma.cuh.tpl",   "sm90_common.cuh.tpl"};
const size_t fg_table_templates_count = FG_ARRAY_LEN(fg_table_templates);

static fagen_status fg_templates_hash_compute(char hex[65], fg_err *err) {
  fg_sha256 s;
  fg_sha256_init(&s);
  char rev[64];
  snprintf(rev, sizeof rev, "fagen-generator %s rev %d", FAGEN_VERSION_STRING, FG_GEN_REVISION);
  fg_sha256_update(&s, rev, strlen(rev) + 1);
  for (size_t i = 0; i < fg_table_templates_count; i++) {
    fg_buf text;
    fg_buf_init(&text);
    fagen_status st = fg_template_read(NULL, fg_table_templates[i], &text, err);
    if (st == FAGEN_OK) fg_hash_entry(&s, fg_table_templates[i], text.data ? text.data : "", text.len);
    fg_buf_free(&text);
    if (st != FAGEN_OK) return st == FAGEN_E_TEMPLATE ? FAGEN_E_IO : st;
  }
  unsigned char digest[32];
  fg_sha256_final(&s, digest);
  fg_hex(digest, 32, hex);
  return FAGEN_OK;
}
