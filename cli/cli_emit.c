#include "cli_emit.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "fagen.h"

#define MAX_TARGETS 16
static const char *const default_targets = "sm_80,sm_90a";

/* Options shared by emit and list. */
typedef struct selection {
  const char *only; /* glob over variant names, or NULL */
  fagen_target targets[MAX_TARGETS];
  int n_targets;
  char **names; /* explicit variant names (emit, show) */
  int n_names;
} selection;

/* The selected variants: explicit names if given, else the default set for
 * the targets, filtered by --only.  Returns a malloc'd array (count in *n) or
 * NULL after printing an error. */
static fagen_variant *select_variants(const selection *sel, size_t *n) {
  fagen_variant *all = NULL;
  size_t count = 0;
  if (sel->n_names) {
    all = calloc((size_t)sel->n_names, sizeof *all);
    if (!all) return NULL;
    for (int i = 0; i < sel->n_names; i++) {
      if (fagen_variant_parse(sel->names[i], &all[i]) != FAGEN_OK) {
        cli_error("fagen", "%s", fagen_last_error());
        free(all);
        return NULL;
      }
    }
    count = (size_t)sel->n_names;
  } else {
    if (fagen_default_variants(sel->targets, (size_t)sel->n_targets, NULL, 0, &count) !=
        FAGEN_OK) {
      cli_error("fagen", "%s", fagen_last_error());
      return NULL;
    }
    all = calloc(count ? count : 1, sizeof *all);
    if (!all) return NULL;
    fagen_default_variants(sel->targets, (size_t)sel->n_targets, all, count, &count);
  }
  size_t kept = 0;
  for (size_t i = 0; i < count; i++) {
    char name[FAGEN_VARIANT_NAME_MAX];
    if (fagen_variant_name(&all[i], name, sizeof name) != FAGEN_OK) continue;
    if (sel->only && fnmatch(sel->only, name, 0) != 0) continue;
    all[kept++] = all[i];
  }
  if (kept == 0) {
    cli_error("fagen", "no variant matches%s%s", sel->only ? " --only " : "",
              sel->only ? sel->only : "");
    free(all);
    return NULL;
  }
  *n = kept;
  return all;
}

/* Parses the options common to emit/list/show.  Returns CLI_OK or an exit
 * code.  extra(arg) handles command-specific flags (returns 1 if consumed). */
typedef int (*extra_flag_fn)(void *user, const char *arg);

static int parse_selection(int argc, char **argv, int first, selection *sel, const char **out_dir,
                           extra_flag_fn extra, void *user, int allow_names) {
  const char *arch = default_targets;
  for (int i = first; i < argc; i++) {
    const char *val;
    int r;
    if ((r = cli_opt_value("fagen", argc, argv, &i, "--only", NULL, &val)) != 0) {
      if (r < 0) return CLI_USAGE;
      sel->only = val;
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--arch", NULL, &val)) != 0) {
      if (r < 0) return CLI_USAGE;
      arch = val;
    } else if (out_dir && (r = cli_opt_value("fagen", argc, argv, &i, "--output", "-o", &val)) != 0) {
      if (r < 0) return CLI_USAGE;
      if (!*val) {
        cli_error("fagen", "empty output directory");
        return CLI_USAGE;
      }
      *out_dir = val;
    } else if (extra && extra(user, argv[i])) {
      continue;
    } else if (argv[i][0] == '-') {
      cli_error("fagen", "unknown option '%s' (see fagen --help)", argv[i]);
      return CLI_USAGE;
    } else if (allow_names) {
      sel->names[sel->n_names++] = argv[i];
    } else {
      cli_error("fagen", "unexpected argument '%s' (see fagen --help)", argv[i]);
      return CLI_USAGE;
    }
  }
  sel->n_targets = cli_parse_targets("fagen", arch, sel->targets, MAX_TARGETS);
  if (sel->n_targets < 0) return CLI_USAGE;
  return CLI_OK;
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 32)
      fprintf(f, "\\u%04x", (unsigned char)*s);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

/* The command line of emit and compile: options, then the selected variants
 * (malloc'd, *n of them) and the output folder.  NULL with *rc set on errors. */
static fagen_variant *variants_and_dir(int argc, char **argv, const char **dir, size_t *n,
                                       int *rc) {
  selection sel;
  memset(&sel, 0, sizeof sel);
  sel.names = calloc((size_t)argc + 1, sizeof *sel.names);
  *rc = sel.names ? parse_selection(argc, argv, 2, &sel, dir, NULL, NULL, 1) : CLI_FAIL;
  fagen_variant *vs = NULL;
  if (*rc == CLI_OK) {
    vs = select_variants(&sel, n);
    if (!vs) *rc = CLI_FAIL;
  }
  free(sel.names);
  return vs;
}

int cli_emit(int argc, char **argv) {
  const char *dir = "fagen_kernels";
  size_t n = 0;
  int rc;
  fagen_variant *vs = variants_and_dir(argc, argv, &dir, &n, &rc);
  if (!vs) return rc;

  /* Generate everything first: a failure leaves nothing behind. */
  char **src = calloc(n, sizeof *src);
  size_t *len = calloc(n, sizeof *len);
  if (!src || !len) {
    cli_error("fagen", "out of memory");
    free(vs);
    free(src);
    free(len);
    return CLI_FAIL;
  }
  rc = CLI_OK;
  for (size_t i = 0; i < n && rc == CLI_OK; i++) {
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&vs[i], name, sizeof name);
    fagen_status st = fagen_variant_source(&vs[i], &src[i], &len[i]);
    if (st != FAGEN_OK) {
      cli_error("fagen", "%s: %s", name, fagen_last_error());
      rc = CLI_FAIL;
    }
  }
  if (rc == CLI_OK && cli_mkdirs(dir) != 0) {
    cli_error("fagen", "cannot create output directory %s: %s", dir, strerror(errno));
    rc = CLI_FAIL;
  }
  char err[4200];
  for (size_t i = 0; i < n && rc == CLI_OK; i++) {
    char file[FAGEN_VARIANT_NAME_MAX + 4];
    fagen_variant_name(&vs[i], file, sizeof file);
    strcat(file, ".cu");
    if (cli_write_atomic(dir, file, src[i], len[i], err, sizeof err) != 0) {
      cli_error("fagen", "%s", err);
      rc = CLI_FAIL;
    }
  }
  if (rc == CLI_OK) {
    /* manifest.json: what was emitted, with every parameter. */
    char *mbuf = NULL;
    size_t mlen = 0;
    FILE *m = open_memstream(&mbuf, &mlen);
    if (!m) {
      cli_error("fagen", "out of memory");
      rc = CLI_FAIL;
    } else {
      fprintf(m, "{\n  \"generator\": \"fagen %s\",\n  \"variants\": [\n", fagen_version());
      for (size_t i = 0; i < n; i++) {
        char name[FAGEN_VARIANT_NAME_MAX], target[16];
        fagen_variant_name(&vs[i], name, sizeof name);
        fagen_target_name(&vs[i].target, 1, target, sizeof target);
        fprintf(m, "    {\"name\": ");
        json_string(m, name);
        /* The op token leads the name (fwd, fwdwg, bwd, bwddet, bwdwg). */
        const int op_len = (int)strcspn(name, "_");
        fprintf(m,
                ", \"file\": \"%s.cu\", \"op\": \"%.*s\", \"head_dim\": %d, \"block_q\": %d, "
                "\"block_kv\": %d, \"warps\": %d, \"stages\": %d, \"pingpong\": %s, "
                "\"prefetch_q\": %s, \"causal\": %s, \"dtype\": \"%s\", \"target\": \"%s\", "
                "\"bytes\": %zu}%s\n",
                name, op_len, name, vs[i].head_dim, vs[i].block_q, vs[i].block_kv, vs[i].warps,
                vs[i].stages, vs[i].pingpong ? "true" : "false",
                vs[i].prefetch_q ? "true" : "false", vs[i].causal ? "true" : "false",
                vs[i].dtype == FAGEN_DTYPE_BF16 ? "bf16" : "fp16", target, len[i],
                i + 1 < n ? "," : "");
      }
      fprintf(m, "  ]\n}\n");
      fclose(m);
      if (cli_write_atomic(dir, "manifest.json", mbuf, mlen, err, sizeof err) != 0) {
        cli_error("fagen", "%s", err);
        rc = CLI_FAIL;
      }
      free(mbuf);
    }
  }
  if (rc == CLI_OK) fprintf(stderr, "fagen: wrote %zu kernels and manifest.json to %s\n", n, dir);
  for (size_t i = 0; i < n; i++) fagen_free(src[i]);
  free(src);
  free(len);
  free(vs);
  return rc;
}

typedef struct list_flags {
  int verbose;
  int space;
} list_flags;

static int list_flag(void *user, const char *arg) {
  list_flags *f = user;
  if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) {
    f->verbose = 1;
    return 1;
  }
  if (strcmp(arg, "--space") == 0) {
    f->space = 1;
    return 1;
  }
  return 0;
}

int cli_list(int argc, char **argv) {
  selection sel;
  memset(&sel, 0, sizeof sel);
  list_flags flags = {0, 0};
  int rc = parse_selection(argc, argv, 2, &sel, NULL, list_flag, &flags, 0);
  if (rc != CLI_OK) return rc;
  /* The cases come from the default set; --only filters what is printed. */
  const char *only = sel.only;
  sel.only = NULL;
  size_t n = 0;
  fagen_variant *cases = select_variants(&sel, &n);
  if (!cases) return CLI_FAIL;
  size_t shown = 0, culled = 0;
  for (size_t i = 0; i < n; i++) {
    char name[FAGEN_VARIANT_NAME_MAX];
    if (!flags.space && !flags.verbose) {
      fagen_variant_name(&cases[i], name, sizeof name);
      if (!only || fnmatch(only, name, 0) == 0) {
        printf("%s\n", name);
        shown++;
      }
      continue;
    }
    size_t nc = 0;
    fagen_variant_candidates(&cases[i], NULL, 0, &nc);
    fagen_variant *cand = calloc(nc ? nc : 1, sizeof *cand);
    if (!cand) {
      free(cases);
      return CLI_FAIL;
    }
    fagen_variant_candidates(&cases[i], cand, nc, &nc);
    if (!flags.space) { /* -v: the default first, then what its space culled */
      fagen_variant_name(&cases[i], name, sizeof name);
      if (!only || fnmatch(only, name, 0) == 0) {
        printf("%s\n", name);
        shown++;
      }
    }
    for (size_t j = 0; j < nc; j++) {
      char reason[512];
      fagen_variant_name(&cand[j], name, sizeof name);
      if (only && fnmatch(only, name, 0) != 0) continue;
      if (fagen_variant_validate(&cand[j], reason, sizeof reason) == FAGEN_OK) {
        if (flags.space) {
          printf("%s\n", name);
          shown++;
        }
      } else if (flags.verbose) {
        printf("# culled %s: %s\n", name, reason);
        culled++;
      }
    }
    free(cand);
  }
  free(cases);
  if (flags.verbose)
    fprintf(stderr, "fagen: %zu variants listed, %zu candidates culled\n", shown, culled);
  if (shown == 0 && culled == 0) {
    cli_error("fagen", "no variant matches --only %s", only ? only : "");
    return CLI_FAIL;
  }
  return CLI_OK;
}

int cli_show(int argc, char **argv) {
  if (argc != 3 || argv[2][0] == '-') {
    cli_error("fagen", "usage: fagen show VARIANT");
    return CLI_USAGE;
  }
  fagen_variant v;
  if (fagen_variant_parse(argv[2], &v) != FAGEN_OK) {
    cli_error("fagen", "%s", fagen_last_error());
    return CLI_FAIL;
  }
  char *src = NULL;
  size_t len = 0;
  if (fagen_variant_source(&v, &src, &len) != FAGEN_OK) {
    cli_error("fagen", "%s", fagen_last_error());
    return CLI_FAIL;
  }
  fwrite(src, 1, len, stdout);
  fagen_free(src);
  return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
}

int cli_compile(int argc, char **argv) {
  const char *dir = "fagen_cubins";
  size_t n = 0;
  int rc;
  fagen_variant *vs = variants_and_dir(argc, argv, &dir, &n, &rc);
  if (!vs) return rc;
  if (cli_mkdirs(dir) != 0) {
    cli_error("fagen", "cannot create output directory %s: %s", dir, strerror(errno));
    free(vs);
    return CLI_FAIL;
  }
  fagen_ctx *ctx;
  if (fagen_ctx_create(&ctx) != FAGEN_OK) {
    free(vs);
    return CLI_FAIL;
  }
  printf("%-48s %5s %11s %6s %9s %9s\n", "variant", "regs", "spill(st/ld)", "stack", "bytes",
         "compile_s");
  for (size_t i = 0; i < n && rc == CLI_OK; i++) {
    char name[FAGEN_VARIANT_NAME_MAX + 8], err[4200];
    fagen_variant_name(&vs[i], name, sizeof name);
    void *cubin;
    size_t size;
    fagen_kernel_info info;
    if (fagen_cubin(ctx, &vs[i], &cubin, &size, &info) != FAGEN_OK) {
      cli_error("fagen", "%s: %s", name, fagen_errmsg(ctx));
      const char *log = fagen_compile_log(ctx);
      if (log[0]) fprintf(stderr, "NVRTC log:\n%s\n", log);
      rc = CLI_FAIL;
      break;
    }
    printf("%-48s %5d %5d/%-5d %6d %9zu %9.3f\n", name, info.registers, info.spill_store_bytes,
           info.spill_load_bytes, info.stack_bytes, size, info.compile_seconds);
    strcat(name, ".cubin");
    if (cli_write_atomic(dir, name, cubin, size, err, sizeof err) != 0) {
      cli_error("fagen", "%s", err);
      rc = CLI_FAIL;
    }
    fagen_free(cubin);
  }
  fagen_ctx_destroy(ctx);
  free(vs);
  return rc;
}
