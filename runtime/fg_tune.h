/* fg_tune: tuning tables — one JSON file per device class, user tables
 * (FAGEN_TUNE_DIR, else CACHE_ROOT/tune) before the ones built into
 * libfagen (tables/).  Format (format_version 1):
 *
 *   { "format": "fagen-tune-table", "format_version": 1,
 *     "fagen_version": "0.1.0", "template_hash": "<fagen_template_hash()>",
 *     "device": {"name": "...", "target": "sm_90a", "sm_count": 132},
 *     "measured": true, "nvrtc": "13.0", "driver": 13000, "date": "...",
 *     "policy": {...},
 *     "entries": [{"op": "fwd", "dtype": "bf16", "head_dim": 128,
 *                  "causal": false, "seqlen": 4096,
 *                  "variant": "fwd_d128_..._sm90a", "ms": 1.41,
 *                  "runner_up": "...", "runner_up_ms": 1.45}, ...] }
 *
 * An entry measured with features (calls with softcap, sequence lengths,
 * ...) says so in "features" ("softcap", "varlen+softcap": fg_features_string
 * of its variant; absent or "" for plain calls).  A call with features takes
 * the entry of exactly its features where a table of its device class has
 * one, else the plain call's entry with its features compiled into the same
 * tiles (a sibling table, likewise, only after both).
 *
 * A table is used only if format, fagen version, template hash and device
 * class all match; an entry only if its variant parses, validates and fits its
 * case and the device's target.  Everything else is reported (log warning)
 * when the table is loaded, once per context, and skipped.
 *
 * A device class with no shipped table of its own borrows the measured one
 * of another device of the same target (the "sibling": nearest SM count,
 * ties to the first file name), unless FAGEN_TUNE_SIBLING=0: its tiles were
 * measured on a GPU of the same architecture, the heuristic's on none. */
#ifndef FG_TUNE_H
#define FG_TUNE_H

#include "fagen.h"
#include "fg_base.h"
#include "fg_cache.h"
#include "fg_log.h"

typedef struct fg_tune_entry {
  fagen_variant v; /* carries the case: op, dtype, head_dim, causal, target */
  int bucket;      /* sequence length the entry was measured at */
  double ms;
} fg_tune_entry;

typedef struct fg_tune_table {
  int present;       /* a usable table was found */
  char source[1100]; /* path, or "builtin:SLUG.json" */
  fg_tune_entry *e;
  size_t n;
} fg_tune_table;

typedef struct fg_tune_state {
  fagen_device_class dc;
  char slug[200];
  fg_tune_table user, shipped, sibling;
} fg_tune_state;

/* The user table path of a class (see fagen_tune_table_path); 0 if none. */
int fg_tune_user_path(const fagen_device_class *dc, const fg_cache *cache, char *buf, size_t size);

/* Loads the user and shipped tables of dc, or the sibling table where dc
 * has no shipped one (problems are logged). */
void fg_tune_load(fg_tune_state *st, const fagen_device_class *dc, const fg_cache *cache,
                  const fg_log *log);
void fg_tune_free(fg_tune_state *st);

/* The entry for a case, from the first of: the user table's entries measured
 * with exactly `features` (FAGEN_FEATURE_* bits), the shipped table's, the
 * user table's plain entries, the shipped table's, then the sibling table's
 * entries with the features and its plain ones; within that, the nearest
 * bucket to seqlen (log2 distance, ties to the smaller).  Returns 1 and fills out (its features set to
 * `features`) and info on a hit. */
int fg_tune_lookup(const fg_tune_state *st, fagen_op op, fagen_dtype dtype, int head_dim,
                   int causal, unsigned features, int seqlen, fagen_variant *out,
                   fagen_select_info *info);

/* Parses and checks one table (exposed for tests).  Returns 1 if usable. */
int fg_tune_parse(const char *text, size_t len, const char *source, const fagen_device_class *dc,
                  const char *template_hash, fg_tune_table *out, const fg_log *log);

#endif
