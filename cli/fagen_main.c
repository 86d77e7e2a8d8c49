/* fagen: the command-line front of the generator and its kernel cache. */
#include <stdio.h>
#include <string.h>

#include "cli_cache.h"
#include "cli_emit.h"
#include "cli_tune.h"
#include "cli_util.h"
#include "fagen.h"

static const char usage_text[] =
    "usage: fagen --emit [-o DIR] [--only GLOB] [--arch LIST] [VARIANT...]\n"
    "       fagen list [-v] [--space] [--only GLOB] [--arch LIST]\n"
    "       fagen show VARIANT\n"
    "       fagen compile [-o DIR] [--only GLOB] [--arch LIST] [VARIANT...]\n"
    "       fagen cache ls|info|clear\n"
    "       fagen cache warm [-j N] [--only GLOB] [--arch LIST] [VARIANT...]\n"
    "       fagen tune show [--backward [--deterministic]] [--head-dim D]\n"
    "                       [--seqlen S] [--seqlen-q SQ] [--dtype T] [--causal] [--softcap C]\n"
    "                       [--device \"NAME,TARGET,SMS\"]\n"
    "       fagen --help | --version\n";

static const char help_text[] =
    "fagen generates specialized FlashAttention CUDA kernels.\n"
    "\n"
    "Commands\n"
    "  --emit, emit   Write one self-contained .cu file per variant, plus\n"
    "                 manifest.json, into DIR (default ./fagen_kernels).  Without\n"
    "                 VARIANT names it writes the default kernel set: forward,\n"
    "                 backward and deterministic backward (fwd, bwd, bwddet), and\n"
    "                 for sm_90a the Hopper forward and backward (fwdwg, bwdwg)\n"
    "                 x head_dim 32, 64, 96, 128, 160, 192, 224 and 256 (bwdwg:\n"
    "                 64, 96, 128, 256) x fp16 and bf16 x causal and not, with each\n"
    "                 case's default tiles, for each target.\n"
    "                 Files compile on their own: nvcc -cubin -arch=sm_80\n"
    "                 FILE.cu (fwdwg, bwdwg: -gencode=arch=compute_90a,code=sm_90a;\n"
    "                 their second parameter holds TMA maps: q, k, v and o;\n"
    "                 bwdwg: q, k, v, dout, the row statistics its _pre\n"
    "                 kernel writes and the fp32 dQ accumulator; see\n"
    "                 runtime/fg_tma.c).  Nothing is written\n"
    "                 unless every variant generates; files appear atomically.\n"
    "  list           Print the names of the default set.  -v also prints, as\n"
    "                 '# culled NAME: reason' lines, the tile candidates of each\n"
    "                 case that the validity predicate rejects; --space prints every\n"
    "                 valid candidate instead of only the defaults.\n"
    "  show VARIANT   Print the generated source of one variant.\n"
    "  compile        Compile with NVRTC (through the cache) and write NAME.cubin\n"
    "                 files into DIR (default ./fagen_cubins), printing registers,\n"
    "                 spills and compile time from the ptxas report.\n"
    "  cache ls       List the compiled kernels in the on-disk cache.\n"
    "  cache info     Show the cache folder, its size and its cap.\n"
    "  cache clear    Remove every cached kernel.\n"
    "  tune show      Which tuning table and entry (or the heuristic) a call would\n"
    "                 use on this GPU, or on the --device class given (default call:\n"
    "                 the forward, head_dim 128, seqlen 4096, bf16, not causal;\n"
    "                 --backward: the backward, --deterministic its deterministic\n"
    "                 form; --softcap C: with logit softcapping, which takes an\n"
    "                 entry measured with softcap where a table has one).  Tables\n"
    "                 are made by fagen-autotune.\n"
    "  cache warm     Compile the default set (or the VARIANTs named) into the\n"
    "                 cache with NVRTC, in N threads (-j, default: all CPUs), so\n"
    "                 that first calls need no compilation.  Needs no GPU.\n"
    "\n"
    "Options\n"
    "  -o, --output DIR  where --emit writes (created if missing)\n"
    "  --only GLOB       keep variants whose name matches the shell glob, e.g.\n"
    "                    'fwd_d128_*_bf16_*'\n"
    "  --arch LIST       comma-separated targets (default sm_80,sm_90a); one of\n"
    "                    sm_80 sm_86 sm_87 sm_89 sm_90 sm_90a sm_100 sm_100a sm_103\n"
    "                    sm_103a sm_120 sm_120a sm_121 sm_121a\n"
    "  -v, --verbose     (list) show culled candidates and why\n"
    "  -j, --jobs N      (cache warm) compiler threads\n"
    "  -h, --help        this text\n"
    "  --version         print the version\n"
    "\n"
    "Variant names read\n"
    "  fwd_d128_bq128_bk64_w4_s1_causal_bf16_sm80\n"
    "  op, head_dim, block_q, block_kv, warps, stages, [causal], dtype, target.\n"
    "\n"
    "Environment\n"
    "  FAGEN_CACHE_DIR        cache folder (else $XDG_CACHE_HOME/fagen, ~/.cache/fagen)\n"
    "  FAGEN_CACHE_DISABLE=1  keep compiled kernels in memory only\n"
    "  FAGEN_CACHE_MAX_BYTES  cache size cap (default 1G; K, M, G suffixes)\n"
    "  FAGEN_LOG=info|debug   log compiles, cache hits and misses, evictions\n"
    "  FAGEN_NVRTC            the NVRTC library file to use\n"
    "  FAGEN_TEMPLATE_DIR     read templates from this folder instead of the copies\n"
    "                         built into libfagen\n"
    "  FAGEN_TUNE_DIR         folder of user tuning tables (else CACHE_ROOT/tune)\n"
    "  FAGEN_TUNE_SIBLING=0   a device with no shipped table takes the heuristic,\n"
    "                         not the table shipped for another device of its target\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_text, stderr);
    return CLI_USAGE;
  }
  const char *cmd = argv[1];
  /* `fagen list --help`, `fagen tune show -h`: help wherever it is asked for
     (no option takes "-h" or "--help" as its value). */
  int want_help = strcmp(cmd, "help") == 0;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) want_help = 1;
  if (want_help) {
    fputs(usage_text, stdout);
    fputc('\n', stdout);
    fputs(help_text, stdout);
    return CLI_OK;
  }
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("fagen %s\n", fagen_version());
    return CLI_OK;
  }
  if (strcmp(cmd, "--emit") == 0 || strcmp(cmd, "emit") == 0) return cli_emit(argc, argv);
  if (strcmp(cmd, "list") == 0) return cli_list(argc, argv);
  if (strcmp(cmd, "show") == 0) return cli_show(argc, argv);
  if (strcmp(cmd, "compile") == 0) return cli_compile(argc, argv);
  if (strcmp(cmd, "cache") == 0) return cli_cache(argc, argv);
  if (strcmp(cmd, "tune") == 0) return cli_tune(argc, argv);
  /* Options before --emit, e.g. `fagen -o DIR --emit`. */
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--emit") == 0) {
      char *tmp = argv[i];
      for (int j = i; j > 1; j--) argv[j] = argv[j - 1];
      argv[1] = tmp;
      return cli_emit(argc, argv);
    }
  cli_error("fagen", "unknown command or option '%s'", cmd);
  fputs(usage_text, stderr);
  return CLI_USAGE;
}
