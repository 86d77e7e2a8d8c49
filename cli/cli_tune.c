#include "cli_tune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_util.h"
#include "fagen.h"

static int int_opt(const char *name, const char *val, int *out) {
  char *end;
  long v = strtol(val, &end, 10);
  if (*end || v <= 0 || v > (1 << 30)) {
    cli_error("fagen", "%s takes a positive integer, not '%s'", name, val);
    return 0;
  }
  *out = (int)v;
  return 1;
}

int cli_tune(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[2], "show") != 0) {
    cli_error("fagen", "usage: fagen tune show [--backward [--deterministic]] [--head-dim D] "
                       "[--seqlen S] [--seqlen-q SQ] [--dtype bf16|fp16] [--causal] [--softcap C] "
                       "[--device \"NAME,TARGET,SMS\"]");
    return CLI_USAGE;
  }
  fagen_attention_args a;
  fagen_attention_args_init(&a);
  a.batch = a.heads_q = a.heads_kv = 1;
  a.head_dim = 128;
  a.seqlen_q = a.seqlen_k = 4096;
  int seqlen_q = 0, backward = 0, deterministic = 0;
  const char *device = NULL;
  for (int i = 3; i < argc; i++) {
    const char *val;
    int r;
    if (!strcmp(argv[i], "--causal")) {
      a.causal = 1;
    } else if (!strcmp(argv[i], "--backward")) {
      backward = 1;
    } else if (!strcmp(argv[i], "--deterministic")) {
      deterministic = 1;
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--head-dim", NULL, &val)) != 0) {
      if (r < 0 || !int_opt("--head-dim", val, &a.head_dim)) return CLI_USAGE;
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--seqlen", NULL, &val)) != 0) {
      if (r < 0 || !int_opt("--seqlen", val, &a.seqlen_k)) return CLI_USAGE;
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--seqlen-q", NULL, &val)) != 0) {
      if (r < 0 || !int_opt("--seqlen-q", val, &seqlen_q)) return CLI_USAGE;
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--dtype", NULL, &val)) != 0) {
      if (r < 0) return CLI_USAGE;
      if (!strcmp(val, "bf16")) a.dtype = FAGEN_DTYPE_BF16;
      else if (!strcmp(val, "fp16")) a.dtype = FAGEN_DTYPE_FP16;
      else {
        cli_error("fagen", "--dtype takes bf16 or fp16, not '%s'", val);
        return CLI_USAGE;
      }
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--softcap", NULL, &val)) != 0) {
      char *end;
      if (r < 0) return CLI_USAGE;
      a.feat.softcap = strtof(val, &end);
      if (*end || end == val || !(a.feat.softcap > 0) || a.feat.softcap > 1e30f) {
        cli_error("fagen", "--softcap takes a cap > 0, not '%s'", val);
        return CLI_USAGE;
      }
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--device", NULL, &val)) != 0) {
      if (r < 0) return CLI_USAGE;
      device = val;
    } else {
      cli_error("fagen", "unknown option '%s' (see fagen --help)", argv[i]);
      return CLI_USAGE;
    }
  }
  a.seqlen_q = seqlen_q ? seqlen_q : a.seqlen_k;
  if (deterministic && !backward) {
    cli_error("fagen", "--deterministic needs --backward");
    return CLI_USAGE;
  }
  fagen_ctx *ctx;
  if (fagen_ctx_create(&ctx) != FAGEN_OK) return CLI_FAIL;
  fagen_device_class dc;
  int rc = CLI_OK;
  if (device) {
    if (fagen_device_class_parse(device, &dc) != FAGEN_OK) {
      cli_error("fagen", "%s", fagen_last_error());
      fagen_ctx_destroy(ctx);
      return CLI_USAGE;
    }
  } else if (fagen_device_class_current(ctx, &dc) != FAGEN_OK) {
    cli_error("fagen", "%s (name one with --device \"NAME,TARGET,SMS\")", fagen_errmsg(ctx));
    fagen_ctx_destroy(ctx);
    return CLI_FAIL;
  }
  char slug[200], target[16], path[1400] = "";
  fagen_device_class_slug(&dc, slug, sizeof slug);
  fagen_target_name(&dc.target, 1, target, sizeof target);
  printf("device:     %s (%s, %d SMs) -> %s\n", dc.name, target, dc.sm_count, slug);
  struct stat sb;
  if (fagen_tune_table_path(ctx, &dc, path, sizeof path) == FAGEN_OK)
    printf("user table: %s (%s)\n", path, stat(path, &sb) == 0 ? "present" : "absent");
  else
    printf("user table: (no location: %s)\n", fagen_errmsg(ctx));
  fagen_variant v;
  fagen_select_info info;
  fagen_status st;
  if (backward) {
    fagen_attention_bwd_args b;
    fagen_attention_bwd_args_init(&b);
    b.dtype = a.dtype;
    b.batch = b.heads_q = b.heads_kv = 1;
    b.head_dim = a.head_dim;
    b.seqlen_q = a.seqlen_q;
    b.seqlen_k = a.seqlen_k;
    b.causal = a.causal;
    b.feat = a.feat;
    b.deterministic = deterministic;
    st = fagen_attention_backward_select(ctx, &b, &dc, &v, &info);
  } else {
    st = fagen_attention_select(ctx, &a, &dc, &v, &info);
  }
  if (st != FAGEN_OK) {
    cli_error("fagen", "%s", fagen_errmsg(ctx));
    rc = CLI_FAIL;
  } else {
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&v, name, sizeof name);
    printf("call:       %s %s head_dim %d, seqlen_q %d, seqlen_k %d%s%s\n",
           backward ? (deterministic ? "deterministic backward" : "backward") : "forward",
           a.dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", a.head_dim, a.seqlen_q, a.seqlen_k,
           a.causal ? ", causal" : "", a.feat.softcap > 0 ? ", softcap" : "");
    printf("selected:   %s\n", name);
    if (info.source == FAGEN_SELECT_HEURISTIC)
      printf("source:     the heuristic (no table has an entry for this case)\n");
    else
      printf("source:     %s %s, entry for seqlen %d (measured %.3f ms%s)\n",
             info.source == FAGEN_SELECT_USER_TABLE      ? "user table"
             : info.source == FAGEN_SELECT_SHIPPED_TABLE ? "shipped table"
                                                         : "shipped table of another device",
             info.table, info.bucket, info.measured_ms,
             info.source == FAGEN_SELECT_SIBLING_TABLE
                 ? " there; none is shipped for this device, fagen-autotune makes one"
                 : "");
    if (info.source != FAGEN_SELECT_HEURISTIC && a.feat.softcap > 0)
      printf("features:   %s\n", info.entry_features
                                      ? "the entry was measured with softcap"
                                      : "no entry measured with softcap: the plain call's tiles");
  }
  fagen_ctx_destroy(ctx);
  return rc;
}
