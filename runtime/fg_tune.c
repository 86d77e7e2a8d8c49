#include "fg_tune.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_embedded.h"
#include "fg_templates.h"
#include "fg_variant.h"

extern const fg_embedded_file fg_embedded_tables[];
extern const size_t fg_embedded_tables_count;

#define FG_TUNE_FORMAT "fagen-tune-table"
#define FG_TUNE_FORMAT_VERSION 1

static const char *fg_str(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Whether an entry's "features" (absent: none) names its variant's. */
static int fg_features_fit(const fagen_variant *v, json_t *feat) {
  char fs[64];
  return fagen_features_name(v->features, fs, sizeof fs) == FAGEN_OK &&
         strcmp(fs, feat ? json_string_value(feat) : "") == 0;
}

/* Checks a parsed table (root, which it releases) and keeps its usable
 * entries.  sibling: the table may be for another device, as long as its
 * target is dc's (fg_tune_load_sibling has picked it; see fg_tune.h). */
static int fg_tune_from_root(json_t *root, const char *source, const fagen_device_class *dc,
                             const char *template_hash, int sibling, fg_tune_table *out, const fg_log *log) {
  memset(out, 0, sizeof *out);
  fg_strlcpy(out->source, source, sizeof out->source);
  const char *why = NULL;
  char whybuf[512];
  json_t *dev = json_object_get(root, "device");
  json_t *entries = json_object_get(root, "entries");
  const char *fmt = fg_str(root, "format");
  json_t *fv = json_object_get(root, "format_version");
  const char *ver = fg_str(root, "fagen_version"), *th = fg_str(root, "template_hash");
  if (!json_is_object(root) || !fmt || strcmp(fmt, FG_TUNE_FORMAT) != 0 || !json_is_integer(fv)) {
    why = "not a fagen tuning table";
  } else if (json_integer_value(fv) != FG_TUNE_FORMAT_VERSION) {
    snprintf(whybuf, sizeof whybuf, "format version %lld, this fagen reads %d",
             (long long)json_integer_value(fv), FG_TUNE_FORMAT_VERSION);
    why = whybuf;
  } else if (!ver || strcmp(ver, FAGEN_VERSION_STRING) != 0) {
    snprintf(whybuf, sizeof whybuf, "made by fagen %s, this is %s", ver ? ver : "?",
             FAGEN_VERSION_STRING);
    why = whybuf;
  } else if (!th || strcmp(th, template_hash) != 0) {
    why = "measured with other templates (template hash differs): re-run fagen-autotune";
  } else if (!json_is_object(dev) || !json_is_array(entries)) {
    why = "no device or entries";
  } else {
    const char *name = fg_str(dev, "name"), *target = fg_str(dev, "target");
    json_t *sms = json_object_get(dev, "sm_count");
    fagen_target t;
    if (!name || !target || !json_is_integer(sms) || fagen_target_parse(target, &t) != FAGEN_OK) {
      why = "malformed device";
    } else if ((!sibling && (strcmp(name, dc->name) != 0 || json_integer_value(sms) != dc->sm_count)) ||
               t.arch != dc->target.arch || t.arch_specific != dc->target.arch_specific) {
      snprintf(whybuf, sizeof whybuf, "for %s (%s, %lld SMs), not this device", name, target,
               (long long)json_integer_value(sms));
      why = whybuf;
    }
  }
  if (why) {
    fg_logf(log, FAGEN_LOG_WARN, "tuning table %s ignored: %s", source, why);
    json_decref(root);
    return 0;
  }
  size_t n = json_array_size(entries), kept = 0;
  out->e = calloc(n ? n : 1, sizeof *out->e);
  if (!out->e) {
    json_decref(root);
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(entries, i);
    const char *op = fg_str(e, "op"), *dt = fg_str(e, "dtype"), *name = fg_str(e, "variant");
    json_t *hd = json_object_get(e, "head_dim"), *causal = json_object_get(e, "causal");
    json_t *seq = json_object_get(e, "seqlen"), *ms = json_object_get(e, "ms");
    json_t *feat = json_object_get(e, "features"); /* optional: "" or absent for plain calls */
    fg_tune_entry te;
    memset(&te, 0, sizeof te);
    char reason[512] = "";
    if (!op || !dt || !name || !json_is_integer(hd) || !json_is_boolean(causal) ||
        !json_is_integer(seq) || json_integer_value(seq) <= 0 || json_integer_value(seq) > (1 << 30) ||
        (feat && !json_is_string(feat)))
      snprintf(reason, sizeof reason, "malformed");
    else if (fagen_variant_parse(name, &te.v) != FAGEN_OK)
      snprintf(reason, sizeof reason, "'%s' is not a variant name", name);
    else if (fg_variant_check(&te.v, NULL, NULL) != FAGEN_OK) {
      fg_err verr;
      fg_variant_check(&te.v, NULL, &verr);
      snprintf(reason, sizeof reason, "%s does not validate: %.300s", name, verr.msg);
    } else if (!fg_op_token(te.v.op) || strcmp(fg_op_token(te.v.op), op) != 0 ||
               strcmp(fg_dtype_token(te.v.dtype), dt) != 0 ||
               te.v.head_dim != (int)json_integer_value(hd) ||
               te.v.causal != (json_is_true(causal) ? 1 : 0) || !fg_features_fit(&te.v, feat))
      snprintf(reason, sizeof reason, "%s does not fit its case", name);
    else if (te.v.target.arch != dc->target.arch ||
             te.v.target.arch_specific != dc->target.arch_specific)
      snprintf(reason, sizeof reason, "%s is for another target", name);
    if (reason[0]) {
      fg_logf(log, FAGEN_LOG_WARN, "tuning table %s: entry %zu ignored: %s", source, i, reason);
      continue;
    }
    te.bucket = (int)json_integer_value(seq);
    te.ms = json_is_number(ms) ? json_number_value(ms) : 0;
    out->e[kept++] = te;
  }
  out->n = kept;
  out->present = 1;
  json_decref(root);
  return 1;
}

int fg_tune_parse(const char *text, size_t len, const char *source, const fagen_device_class *dc,
                  const char *template_hash, fg_tune_table *out, const fg_log *log) {
  json_error_t jerr;
  json_t *root = json_loadb(text, len, 0, &jerr);
  if (!root) {
    memset(out, 0, sizeof *out);
    fg_strlcpy(out->source, source, sizeof out->source);
    fg_logf(log, FAGEN_LOG_WARN, "tuning table %s ignored: not valid JSON (line %d: %s)", source,
            jerr.line, jerr.text);
    return 0;
  }
  return fg_tune_from_root(root, source, dc, template_hash, 0, out, log);
}

/* The sibling table of dc: among the measured built-in tables of dc's
 * target, the one with the nearest SM count (ties to the first file name).
 * A built-in table's file name is its class's slug, which starts with the
 * target ("sm90a-..."), so tables of other targets are not even parsed; each
 * of the others is parsed once. */
static void fg_tune_load_sibling(fg_tune_state *st, const fagen_device_class *dc, const char *hash,
                                 const fg_log *log) {
  const char *off = getenv("FAGEN_TUNE_SIBLING");
  if (off && strcmp(off, "0") == 0) return;
  const size_t tlen = strcspn(st->slug, "-") + 1; /* "sm90a-" */
  const fg_embedded_file *best = NULL;
  json_t *best_root = NULL;
  long long best_d = 0, best_sms = 0;
  for (size_t i = 0; i < fg_embedded_tables_count; i++) {
    const fg_embedded_file *f = &fg_embedded_tables[i];
    if (strncmp(f->name, st->slug, tlen) != 0) continue;
    json_t *root = json_loadb((const char *)f->data, f->size, 0, NULL);
    json_t *sms = json_object_get(json_object_get(root, "device"), "sm_count");
    if (!json_is_integer(sms) || !json_is_true(json_object_get(root, "measured"))) {
      json_decref(root);
      continue;
    }
    const long long n = json_integer_value(sms);
    const long long d = n > dc->sm_count ? n - dc->sm_count : dc->sm_count - n;
    if (best && (d > best_d || (d == best_d && strcmp(f->name, best->name) > 0))) {
      json_decref(root);
      continue;
    }
    json_decref(best_root);
    best = f;
    best_root = root;
    best_d = d;
    best_sms = n;
  }
  if (!best) return;
  char source[240], device[160];
  snprintf(source, sizeof source, "builtin:%s", best->name);
  const char *name = fg_str(json_object_get(best_root, "device"), "name");
  fg_strlcpy(device, name ? name : "?", sizeof device);
  if (fg_tune_from_root(best_root, source, dc, hash, 1, &st->sibling, log))
    fg_logf(log, FAGEN_LOG_INFO,
            "no tuning table shipped for %s (%d SMs): using %s, measured on %s (%lld SMs) "
            "(FAGEN_TUNE_SIBLING=0: the heuristic instead; fagen-autotune makes this device's own)",
            dc->name, dc->sm_count, source, device, best_sms);
}

static void fg_tune_read_file(const char *path, const fagen_device_class *dc, const char *hash,
                              fg_tune_table *out, const fg_log *log) {
  FILE *f = fopen(path, "rb");
  if (!f) return; /* no user table: not an error */
  fg_buf b;
  fg_buf_init(&b);
  char chunk[8192];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < (64u << 20)) fg_buf_append(&b, chunk, n);
  int bad = ferror(f);
  fclose(f);
  if (bad || b.oom)
    fg_logf(log, FAGEN_LOG_WARN, "tuning table %s ignored: cannot read it", path);
  else
    fg_tune_parse(b.data ? b.data : "", b.len, path, dc, hash, out, log);
  fg_buf_free(&b);
}

int fg_tune_user_path(const fagen_device_class *dc, const fg_cache *cache, char *buf, size_t size) {
  char slug[200];
  if (fagen_device_class_slug(dc, slug, sizeof slug) != FAGEN_OK) return 0;
  const char *dir = getenv("FAGEN_TUNE_DIR");
  int n;
  if (dir && *dir)
    n = snprintf(buf, size, "%s/%s.json", dir, slug);
  else if (cache->root[0])
    n = snprintf(buf, size, "%s/tune/%s.json", cache->root, slug);
  else
    return 0;
  return n > 0 && (size_t)n < size;
}

void fg_tune_load(fg_tune_state *st, const fagen_device_class *dc, const fg_cache *cache,
                  const fg_log *log) {
  memset(st, 0, sizeof *st);
  st->dc = *dc;
  if (!dc->name[0]) return; /* an anonymous class has no tables */
  fagen_device_class_slug(dc, st->slug, sizeof st->slug);
  char hash[65];
  fg_err err;
  if (fg_templates_hash(hash, &err) != FAGEN_OK) {
    fg_logf(log, FAGEN_LOG_WARN, "tuning tables not used: %s", err.msg);
    return;
  }
  char path[1400];
  if (fg_tune_user_path(dc, cache, path, sizeof path)) fg_tune_read_file(path, dc, hash, &st->user, log);
  char file[220];
  snprintf(file, sizeof file, "%s.json", st->slug);
  int own = 0;
  for (size_t i = 0; i < fg_embedded_tables_count; i++)
    if (strcmp(fg_embedded_tables[i].name, file) == 0) {
      char source[240];
      snprintf(source, sizeof source, "builtin:%s", file);
      fg_tune_parse((const char *)fg_embedded_tables[i].data, fg_embedded_tables[i].size, source, dc,
                    hash, &st->shipped, log);
      own = 1;
    }
  if (!own) fg_tune_load_sibling(st, dc, hash, log);
}

void fg_tune_free(fg_tune_state *st) {
  free(st->user.e);
  free(st->shipped.e);
  free(st->sibling.e);
  memset(st, 0, sizeof *st);
}

static int fg_tune_find(const fg_tune_table *t, fagen_op op, fagen_dtype dtype, int head_dim,
                        int causal, unsigned features, int seqlen, const fg_tune_entry **hit) {
  if (!t->present) return 0;
  double best = INFINITY;
  *hit = NULL;
  double ls = log2((double)(seqlen > 0 ? seqlen : 1));
  for (size_t i = 0; i < t->n; i++) {
    const fg_tune_entry *e = &t->e[i];
    if (e->v.op != op || e->v.dtype != dtype || e->v.head_dim != head_dim || e->v.causal != causal ||
        e->v.features != features)
      continue;
    double d = fabs(log2((double)e->bucket) - ls);
    if (d < best - 1e-9 || (fabs(d - best) <= 1e-9 && *hit && e->bucket < (*hit)->bucket)) {
      best = d;
      *hit = e;
    }
  }
  return *hit != NULL;
}

int fg_tune_lookup(const fg_tune_state *st, fagen_op op, fagen_dtype dtype, int head_dim,
                   int causal, unsigned features, int seqlen, fagen_variant *out,
                   fagen_select_info *info) {
  const fg_tune_entry *e;
  const fg_tune_table *tables[3] = {&st->user, &st->shipped, &st->sibling};
  static const fagen_select_source kind[3] = {FAGEN_SELECT_USER_TABLE, FAGEN_SELECT_SHIPPED_TABLE,
                                              FAGEN_SELECT_SIBLING_TABLE};
  /* This device class's tables (user, shipped) before another device's
     (sibling); within each group an entry measured with the call's
     features before the plain call's, whose tiles take the features. */
  static const struct {
    int table, plain;
  } order[6] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {2, 0}, {2, 1}};
  for (int i = 0; i < 6; i++)
    if (features || order[i].plain) {
      const int k = order[i].table;
      if (fg_tune_find(tables[k], op, dtype, head_dim, causal, order[i].plain ? 0u : features, seqlen, &e)) {
        *out = e->v;
        out->features = features;
        if (info) {
          info->source = kind[k];
          fg_strlcpy(info->table, tables[k]->source, sizeof info->table);
          info->bucket = e->bucket;
          info->measured_ms = e->ms;
          info->entry_features = e->v.features;
        }
        return 1;
      }
    }
  return 0;
}
