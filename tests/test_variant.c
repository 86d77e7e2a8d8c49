/* The variant space: names, parsing, the validity predicate, targets, the
 * default set and the candidates. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_variant.h"

static fagen_variant v_ok(void) {
  fagen_variant v;
  memset(&v, 0, sizeof v);
  v.op = FAGEN_OP_FWD;
  v.head_dim = 128;
  v.block_q = 64;
  v.block_kv = 64;
  v.warps = 4;
  v.stages = 1;
  v.causal = 1;
  v.dtype = FAGEN_DTYPE_BF16;
  v.target.arch = 80;
  return v;
}

Test(variant, name_has_every_parameter) {
  fagen_variant v = v_ok();
  char name[FAGEN_VARIANT_NAME_MAX];
  cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_OK);
  cr_assert_str_eq(name, "fwd_d128_bq64_bk64_w4_s1_causal_bf16_sm80");
  v.causal = 0;
  v.dtype = FAGEN_DTYPE_FP16;
  v.target.arch = 90;
  v.target.arch_specific = 1;
  cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_OK);
  cr_assert_str_eq(name, "fwd_d128_bq64_bk64_w4_s1_fp16_sm90a");
}

Test(variant, name_buffer_too_small) {
  fagen_variant v = v_ok();
  char name[10];
  cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_E_BUFFER_TOO_SMALL);
  cr_assert_str_eq(name, "");
}

/* The feature tokens of tuning tables' "features" field. */
Test(variant, features_name) {
  char buf[64];
  cr_assert_eq(fagen_features_name(0, buf, sizeof buf), FAGEN_OK);
  cr_assert_str_eq(buf, "");
  cr_assert_eq(fagen_features_name(FAGEN_FEATURE_SOFTCAP | FAGEN_FEATURE_VARLEN, buf, sizeof buf), FAGEN_OK);
  cr_assert_str_eq(buf, "varlen+softcap");
  cr_assert_eq(fagen_features_name(FAGEN_FEATURES_ALL, buf, sizeof buf), FAGEN_OK);
  cr_assert_str_eq(buf, "varlen+window+softcap+alibi+dropout");
  cr_assert_eq(fagen_features_name(FAGEN_FEATURE_SOFTCAP | FAGEN_FEATURE_VARLEN, buf, 14), FAGEN_E_BUFFER_TOO_SMALL);
  cr_assert_str_eq(buf, "");
  cr_assert_eq(fagen_features_name(FAGEN_FEATURE_SOFTCAP | FAGEN_FEATURE_VARLEN, buf, 15), FAGEN_OK);
  cr_assert_eq(fagen_features_name(1u << 20, buf, sizeof buf), FAGEN_E_INVALID_ARGUMENT);
  cr_assert(strstr(fagen_last_error(), "unknown bits"), "%s", fagen_last_error());
  cr_assert_eq(fagen_features_name(0, NULL, 4), FAGEN_E_NULL_POINTER);
}

Test(variant, parse_round_trips_every_default) {
  fagen_target t[2] = {{80, 0}, {90, 1}};
  size_t n = 0;
  cr_assert_eq(fagen_default_variants(t, 2, NULL, 0, &n), FAGEN_OK);
  cr_assert_eq(n, 240,
               "3 ops (fwd, bwd, bwddet) x 8 head dims x 2 dtypes x 2 causal x 2 targets, + fwdwg "
               "(32) and bwdwg (4 head dims: 16) on sm_90a, got %zu",
               n);
  fagen_variant vs[240];
  cr_assert_eq(fagen_default_variants(t, 2, vs, 240, &n), FAGEN_OK);
  for (size_t i = 0; i < n; i++) {
    char name[FAGEN_VARIANT_NAME_MAX], again[FAGEN_VARIANT_NAME_MAX];
    fagen_variant back;
    cr_assert_eq(fagen_variant_name(&vs[i], name, sizeof name), FAGEN_OK);
    cr_assert_eq(fagen_variant_parse(name, &back), FAGEN_OK, "%s", name);
    cr_assert_eq(fg_variant_cmp(&vs[i], &back), 0, "%s", name);
    fagen_variant_name(&back, again, sizeof again);
    cr_assert_str_eq(name, again);
    char reason[256];
    cr_assert_eq(fagen_variant_validate(&vs[i], reason, sizeof reason), FAGEN_OK, "%s: %s", name,
                 reason);
  }
}

Test(variant, parse_rejects_malformed_names) {
  const char *bad[] = {"",
                       "fwd",
                       "bwd2_d128_bq16_bk64_w4_s1_bf16_sm80",
                       "bwdde_d128_bq16_bk64_w4_s1_bf16_sm80",
                       "fwd_d128_bq16_bk64_w4_s1_bf16",
                       "fwd_d128_bq16_bk64_w4_s1_bf16_sm80_extra",
                       "fwd_d0128_bq16_bk64_w4_s1_bf16_sm80",
                       "fwd_d128_bq16_bk64_w4_s1_causal_bf32_sm80",
                       "fwd_d128_bq16_bk64_w4_s1_casual_bf16_sm80",
                       "fwd_d-128_bq16_bk64_w4_s1_bf16_sm80",
                       "fwd_d128_bq16_bk64_w4_s1_bf16_sm_80",
                       "fwd_d128_bq16_bk64_w4_s1_bf16_smx",
                       "fwd_d99999999999_bq16_bk64_w4_s1_bf16_sm80",
                       "fwd__d128_bq16_bk64_w4_s1_bf16_sm80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fagen_variant v;
    cr_assert_eq(fagen_variant_parse(bad[i], &v), FAGEN_E_BAD_NAME, "accepted '%s'", bad[i]);
    cr_assert(strstr(fagen_last_error(), "not a variant name"), "%s", fagen_last_error());
  }
  cr_assert_eq(fagen_variant_parse(NULL, NULL), FAGEN_E_NULL_POINTER);
}

/* Each invalid variant gets FAGEN_E_INVALID_VARIANT and a reason that says why. */
static void expect_invalid(fagen_variant v, const char *needle) {
  char reason[512] = "unchanged";
  cr_assert_eq(fagen_variant_validate(&v, reason, sizeof reason), FAGEN_E_INVALID_VARIANT,
               "accepted a variant that should fail with '%s'", needle);
  cr_assert(strstr(reason, needle), "reason '%s' does not mention '%s'", reason, needle);
  cr_assert_str_eq(fagen_last_error(), reason);
}

Test(variant, head_dim_0_300_33_are_invalid) {
  fagen_variant v = v_ok();
  v.head_dim = 0;
  expect_invalid(v, "head_dim=0");
  v.head_dim = 300;
  expect_invalid(v, "head_dim=300");
  v.head_dim = 33;
  expect_invalid(v, "head_dim=33");
}

Test(variant, block_sizes_that_do_not_divide) {
  fagen_variant v = v_ok();
  v.block_q = 96; /* not 16 x 4 warps x 1 or 2 */
  expect_invalid(v, "must be 16 x warps");
  v = v_ok();
  v.block_kv = 40;
  expect_invalid(v, "not a multiple of 16");
  v = v_ok();
  v.warps = 2;
  expect_invalid(v, "uses 4 or 8");
}

Test(variant, shared_memory_over_budget) {
  fagen_variant v = v_ok();
  v.head_dim = 256;
  v.block_q = 128;
  v.warps = 8;
  v.block_kv = 64; /* 131072 bytes */
  v.target.arch = 86; /* 99 KB */
  expect_invalid(v, "bytes of shared memory");
  v.target.arch = 80; /* 163 KB: this one fits */
  cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK);
}

Test(variant, registers_over_budget) {
  /* 32 rows per warp at head_dim 128 with 128-key tiles: 128 O and 128 S
     accumulators per thread leave no room. */
  fagen_variant v = v_ok();
  v.block_q = 128;
  v.block_kv = 128;
  expect_invalid(v, "304 registers per thread");
}

Test(variant, other_constraints) {
  fagen_variant v = v_ok();
  v.stages = 3;
  expect_invalid(v, "1 or 2 K/V buffers");
  v = v_ok();
  v.warps = 0;
  expect_invalid(v, "warps=0");
  v = v_ok();
  v.causal = 2;
  expect_invalid(v, "causal=2");
  v = v_ok();
  v.dtype = (fagen_dtype)7;
  expect_invalid(v, "dtype 7");
  v = v_ok();
  v.target.arch = 75;
  expect_invalid(v, "sm_75");
  v = v_ok();
  v.target.arch_specific = 1; /* there is no sm_80a */
  expect_invalid(v, "sm_80a");
  v = v_ok();
  v.op = (fagen_op)9;
  expect_invalid(v, "op 9");
}

Test(variant, targets_parse_and_print) {
  fagen_target t;
  char buf[16];
  cr_assert_eq(fagen_target_parse("sm_90a", &t), FAGEN_OK);
  cr_assert(t.arch == 90 && t.arch_specific == 1);
  fagen_target_name(&t, 1, buf, sizeof buf);
  cr_assert_str_eq(buf, "sm_90a");
  fagen_target_name(&t, 0, buf, sizeof buf);
  cr_assert_str_eq(buf, "sm90a");
  cr_assert_eq(fagen_target_parse("sm80", &t), FAGEN_OK);
  cr_assert(t.arch == 80 && t.arch_specific == 0);
  const char *bad[] = {"sm_75", "sm_80a", "80", "sm_", "compute_90", "sm_9000", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_eq(fagen_target_parse(bad[i], &t), FAGEN_E_INVALID_ARGUMENT, "accepted %s", bad[i]);
  cr_assert(strstr(fagen_last_error(), "not"), "%s", fagen_last_error());
}

Test(variant, default_set_rejects_bad_targets_and_small_buffers) {
  fagen_target bad = {70, 0};
  size_t n;
  cr_assert_eq(fagen_default_variants(&bad, 1, NULL, 0, &n), FAGEN_E_INVALID_ARGUMENT);
  fagen_target ok = {80, 0};
  fagen_variant vs[4];
  cr_assert_eq(fagen_default_variants(&ok, 1, vs, 4, &n), FAGEN_E_BUFFER_TOO_SMALL);
  cr_assert_eq(n, 96);
}

Test(variant, candidates_cover_the_axis_table) {
  fagen_variant base = v_ok();
  size_t n = 0;
  cr_assert_eq(fagen_variant_candidates(&base, NULL, 0, &n), FAGEN_OK);
  cr_assert_eq(n, 36); /* 3 block_q x 3 block_kv x 2 warps x 2 stages */
  fagen_variant c[36];
  cr_assert_eq(fagen_variant_candidates(&base, c, 36, &n), FAGEN_OK);
  int valid = 0, has_default = 0;
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(c[i].head_dim, base.head_dim);
    cr_assert_eq(c[i].causal, base.causal);
    valid += fagen_variant_validate(&c[i], NULL, 0) == FAGEN_OK;
    has_default |= fg_variant_cmp(&c[i], &base) == 0;
  }
  cr_assert(valid > 0 && valid < 36, "some candidates must be culled, some kept (%d)", valid);
  cr_assert(has_default, "the default tiles are one of the candidates");
}

/* The fwdwg family's pingpong knob: its own name token, parsed back, in the
 * candidate space, and refused where it cannot apply. */
Test(variant, pingpong_knob) {
  fagen_variant v;
  cr_assert_eq(fagen_variant_parse("fwdwg_d128_bq128_bk128_w12_s2_pp_causal_bf16_sm90a", &v), FAGEN_OK);
  cr_assert_eq(v.pingpong, 1);
  cr_assert_eq(v.causal, 1);
  cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK);
  char name[FAGEN_VARIANT_NAME_MAX];
  cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_OK);
  cr_assert_str_eq(name, "fwdwg_d128_bq128_bk128_w12_s2_pp_causal_bf16_sm90a");
  fagen_variant off = v;
  off.pingpong = 0;
  cr_assert_neq(fg_variant_cmp(&v, &off), 0);
  /* One consumer has nobody to take turns with. */
  fagen_variant one = v;
  one.block_q = 64;
  one.warps = 8;
  expect_invalid(one, "2 or 3 consumer warpgroups");
  one.pingpong = 0;
  cr_assert_eq(fagen_variant_validate(&one, NULL, 0), FAGEN_OK);
  /* Only fwdwg has the knob; only 0 and 1 are values. */
  fagen_variant sm80 = v_ok();
  sm80.pingpong = 1;
  expect_invalid(sm80, "only the wgmma forward family");
  fagen_variant two = v;
  two.pingpong = 2;
  expect_invalid(two, "pingpong=2 must be 0 or 1");
  cr_assert_eq(fagen_variant_name(&two, name, sizeof name), FAGEN_E_INVALID_ARGUMENT);
  cr_assert_eq(fagen_variant_parse("fwd_d128_bq64_bk64_w4_s1_pp_pp_bf16_sm80", &v), FAGEN_E_BAD_NAME);
  /* The space has both settings wherever two or more consumers are. */
  size_t n = 0;
  fagen_variant c[1024];
  cr_assert_eq(fagen_variant_candidates(&v, c, 1024, &n), FAGEN_OK);
  int on = 0, off_valid = 0;
  for (size_t i = 0; i < n; i++) {
    if (fagen_variant_validate(&c[i], NULL, 0) != FAGEN_OK) continue;
    on += c[i].pingpong;
    off_valid += !c[i].pingpong && c[i].block_q > 64;
  }
  cr_assert(on > 0 && on == off_valid, "%d with pingpong, %d without (2+ consumers)", on, off_valid);
  /* The heuristic: off at d64 (measured slower), on above. */
  fagen_target t90 = {90, 1};
  fagen_variant defs[144];
  cr_assert_eq(fagen_default_variants(&t90, 1, defs, 144, &n), FAGEN_OK);
  int seen = 0;
  for (size_t i = 0; i < n; i++)
    if (defs[i].op == FAGEN_OP_FWD_WGMMA) {
      cr_assert_eq(defs[i].pingpong, defs[i].head_dim > 64, "d%d", defs[i].head_dim);
      seen++;
    } else {
      cr_assert_eq(defs[i].pingpong, 0);
    }
  cr_assert_eq(seen, 32);
}

/* The fwdwg family's prefetch_q knob (a second Q tile): its own name token
 * after "_pp", parsed back, in the candidate space where two Q tiles fit, off
 * in the heuristic, and refused where it cannot apply. */
Test(variant, prefetch_q_knob) {
  fagen_variant v;
  const char *nm = "fwdwg_d64_bq128_bk128_w12_s2_pp_pq_causal_bf16_sm90a";
  cr_assert_eq(fagen_variant_parse(nm, &v), FAGEN_OK);
  cr_assert(v.prefetch_q == 1 && v.pingpong == 1 && v.causal == 1);
  cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK);
  char name[FAGEN_VARIANT_NAME_MAX];
  cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_OK);
  cr_assert_str_eq(name, nm);
  fagen_variant off = v;
  off.prefetch_q = 0;
  cr_assert_neq(fg_variant_cmp(&v, &off), 0);
  cr_assert_eq(fagen_variant_parse("fwdwg_d64_bq128_bk128_w12_s2_pq_pp_bf16_sm90a", &v), FAGEN_E_BAD_NAME);
  cr_assert_eq(fagen_variant_parse("fwdwg_d64_bq128_bk128_w12_s2_pq_pq_bf16_sm90a", &v), FAGEN_E_BAD_NAME);
  fagen_variant sm80 = v_ok();
  sm80.prefetch_q = 1;
  expect_invalid(sm80, "prefetch_q: only the wgmma forward family");
  fagen_variant two = off;
  two.prefetch_q = 2;
  expect_invalid(two, "prefetch_q=2 must be 0 or 1");
  cr_assert_eq(fagen_variant_name(&two, name, sizeof name), FAGEN_E_INVALID_ARGUMENT);
  /* d256 with 128 rows and 80 keys: a second Q tile does not fit. */
  cr_assert_eq(fagen_variant_parse("fwdwg_d256_bq128_bk80_w12_s2_pp_pq_bf16_sm90a", &v), FAGEN_OK);
  expect_invalid(v, "two Q tiles (prefetch_q)");
  /* The space: both settings, the knob valid wherever it fits. */
  size_t n = 0;
  fagen_variant c[1024];
  cr_assert_eq(fagen_variant_candidates(&off, c, 1024, &n), FAGEN_OK);
  int with = 0, without = 0;
  for (size_t i = 0; i < n; i++) {
    if (fagen_variant_validate(&c[i], NULL, 0) != FAGEN_OK) continue;
    if (c[i].prefetch_q) with++;
    else without++;
  }
  cr_assert(with > 0 && with <= without, "%d with prefetch_q, %d without", with, without);
  /* The heuristic leaves it off. */
  fagen_target t90 = {90, 1};
  fagen_variant defs[144];
  cr_assert_eq(fagen_default_variants(&t90, 1, defs, 144, &n), FAGEN_OK);
  for (size_t i = 0; i < n; i++) cr_assert_eq(defs[i].prefetch_q, 0);
}

/* The wgmma forward's shared memory: Q (two tiles with prefetch_q), the K/V
 * stages, then O's shared tile above head_dim 64 where it still fits (else O
 * goes out from the registers); the resource model counts them all. */
Test(variant, fwdwg_shared_tiles) {
  const struct {
    const char *name;
    int o_smem, smem;
  } want[] = {
      {"fwdwg_d128_bq128_bk128_w12_s2_pp_bf16_sm90a", 1, (128 + 4 * 128 + 128) * 128 * 2 + 1024},
      {"fwdwg_d128_bq128_bk128_w12_s2_pp_pq_bf16_sm90a", 1, (256 + 4 * 128 + 128) * 128 * 2 + 1024},
      {"fwdwg_d64_bq128_bk128_w12_s2_bf16_sm90a", 0, (128 + 4 * 128) * 64 * 2 + 1024},
      {"fwdwg_d64_bq128_bk128_w12_s2_pq_bf16_sm90a", 0, (256 + 4 * 128) * 64 * 2 + 1024},
      {"fwdwg_d256_bq128_bk80_w12_s2_pp_bf16_sm90a", 0, (128 + 4 * 80) * 256 * 2 + 1024},
      {"fwdwg_d128_bq128_bk160_w12_s2_bf16_sm90a", 1, (128 + 4 * 160 + 128) * 128 * 2 + 1024},
      {"fwdwg_d128_bq128_bk160_w12_s2_pq_bf16_sm90a", 0, (256 + 4 * 160) * 128 * 2 + 1024},
      {"fwdwg_d256_bq64_bk64_w8_s2_pq_causal_bf16_sm90a", 1, (128 + 4 * 64 + 64) * 256 * 2 + 1024},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    fagen_variant v;
    cr_assert_eq(fagen_variant_parse(want[i].name, &v), FAGEN_OK);
    fg_resources r;
    cr_assert_eq(fg_variant_check(&v, &r, NULL), FAGEN_OK, "%s", want[i].name);
    cr_assert_eq(r.fwd_o_smem, want[i].o_smem, "%s", want[i].name);
    cr_assert_eq(r.smem_bytes, want[i].smem, "%s", want[i].name);
    cr_assert_leq(r.smem_bytes + 256, fg_target_smem_limit(&v.target), "%s", want[i].name);
  }
}

/* The fwdwg candidate space reaches the largest key tiles whose consumer
 * registers fit: 224 keys at head_dim 64 with two consumers, 112 with three;
 * head_dim 128 stops at 176 and takes no 112 with three consumers. */
Test(variant, fwdwg_key_tiles_in_the_space) {
  fagen_variant base;
  cr_assert_eq(fagen_variant_parse("fwdwg_d64_bq128_bk128_w12_s2_bf16_sm90a", &base), FAGEN_OK);
  size_t n = 0;
  cr_assert_eq(fagen_variant_candidates(&base, NULL, 0, &n), FAGEN_OK);
  fagen_variant *c = calloc(n, sizeof *c);
  cr_assert_not_null(c);
  cr_assert_eq(fagen_variant_candidates(&base, c, n, &n), FAGEN_OK);
  int seen[3] = {0, 0, 0}; /* valid bq128 bk224, bq128 bk192, bq192 bk112 */
  for (size_t i = 0; i < n; i++) {
    if (fagen_variant_validate(&c[i], NULL, 0) != FAGEN_OK) continue;
    seen[0] |= c[i].block_q == 128 && c[i].block_kv == 224;
    seen[1] |= c[i].block_q == 128 && c[i].block_kv == 192;
    seen[2] |= c[i].block_q == 192 && c[i].block_kv == 112;
  }
  free(c);
  cr_assert(seen[0] && seen[1] && seen[2], "d64: bk224 %d, bk192 %d, bq192 bk112 %d", seen[0],
            seen[1], seen[2]);
  const char *bad[] = {"fwdwg_d128_bq128_bk192_w12_s2_bf16_sm90a",
                       "fwdwg_d128_bq192_bk112_w16_s2_bf16_sm90a",
                       "fwdwg_d64_bq192_bk128_w16_s2_bf16_sm90a"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fagen_variant v;
    cr_assert_eq(fagen_variant_parse(bad[i], &v), FAGEN_OK, "%s", bad[i]);
    char why[256];
    cr_assert_eq(fagen_variant_validate(&v, why, sizeof why), FAGEN_E_INVALID_VARIANT, "%s", bad[i]);
    cr_assert(strstr(why, "registers") != NULL, "%s: %s", bad[i], why);
  }
}

/* ---- the Hopper backward family (bwdwg) ---------------------------------- */

static fagen_variant bwdwg(const char *name) {
  fagen_variant v;
  cr_assert_eq(fagen_variant_parse(name, &v), FAGEN_OK, "%s", name);
  cr_assert_eq(v.op, FAGEN_OP_BWD_WGMMA, "%s", name);
  return v;
}

Test(variant, bwdwg_names_round_trip_and_validate) {
  const char *ok[] = {"bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a",
                      "bwdwg_d64_bq128_bk128_w12_s2_fp16_sm90a",
                      "bwdwg_d96_bq64_bk64_w8_s1_bf16_sm90a",
                      "bwdwg_d64_bq64_bk64_w8_s2_causal_fp16_sm90a", /* causal is no feature */
                      "bwdwg_d256_bq64_bk64_w12_s1_causal_bf16_sm90a"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    fagen_variant v = bwdwg(ok[i]);
    char name[FAGEN_VARIANT_NAME_MAX], reason[512] = "";
    cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_OK);
    cr_assert_str_eq(name, ok[i]);
    cr_assert_eq(fagen_variant_validate(&v, reason, sizeof reason), FAGEN_OK, "%s: %s", ok[i],
                 reason);
    cr_assert_str_eq(fg_variant_template(&v), "bwd_sm90.cu.tpl");
  }
  /* "bwdwg" is its own token, not "bwd" with a suffix. */
  fagen_variant v;
  cr_assert_eq(fagen_variant_parse("bwdw_d128_bq64_bk128_w12_s2_bf16_sm90a", &v), FAGEN_E_BAD_NAME);
  cr_assert_eq(fagen_variant_parse("bwdwgx_d128_bq64_bk128_w12_s2_bf16_sm90a", &v),
               FAGEN_E_BAD_NAME);
}

/* The resource model: launch shape, the exact shared memory (K, V, stages x
 * (Q, dO), two dS tiles, stages x (LSE, D) rows, 1024 alignment, dQ's fp32
 * tile [block_q][head_dim] but at d256 with two stages), the consumers'
 * register budget and the helper kernels' threads. */
Test(variant, bwdwg_resources) {
  const struct {
    const char *name;
    int threads, smem;
  } want[] = {
      {"bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a", 384,
       (2 * 128 + 2 * 2 * 64) * 128 * 2 + 2 * 128 * 64 * 2 + 2 * 2 * 64 * 4 + 1024 + 64 * 128 * 4},
      {"bwdwg_d64_bq128_bk128_w12_s2_fp16_sm90a", 384,
       (2 * 128 + 2 * 2 * 128) * 64 * 2 + 2 * 128 * 128 * 2 + 2 * 2 * 128 * 4 + 1024 +
           128 * 64 * 4},
      /* head_dim 96 is stored as two 64-column slices */
      {"bwdwg_d96_bq64_bk64_w8_s1_bf16_sm90a", 256,
       (2 * 64 + 2 * 1 * 64) * 128 * 2 + 2 * 64 * 64 * 2 + 2 * 1 * 64 * 4 + 1024 + 64 * 96 * 4},
      /* head_dim 256: P^T's two tiles beside dS^T's; with two Q/dO buffers
         226 KiB of sm_90a's 227 and no dQ tile, with one the dQ tile (225.5) */
      {"bwdwg_d256_bq64_bk64_w12_s2_bf16_sm90a", 384,
       (2 * 64 + 2 * 2 * 64) * 256 * 2 + 4 * 64 * 64 * 2 + 2 * 2 * 64 * 4 + 1024},
      {"bwdwg_d256_bq64_bk64_w12_s1_bf16_sm90a", 384,
       (2 * 64 + 2 * 1 * 64) * 256 * 2 + 4 * 64 * 64 * 2 + 2 * 1 * 64 * 4 + 1024 + 64 * 256 * 4},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    fagen_variant v = bwdwg(want[i].name);
    fg_resources r;
    cr_assert_eq(fg_variant_check(&v, &r, NULL), FAGEN_OK, "%s", want[i].name);
    cr_assert_eq(r.threads, want[i].threads, "%s", want[i].name);
    cr_assert_eq(r.smem_bytes, want[i].smem, "%s: %d bytes", want[i].name, r.smem_bytes);
    cr_assert_eq(r.fwd_consumer_regs, 240, "%s", want[i].name);
    cr_assert_eq(r.aux_threads, FG_BWD_AUX_THREADS, "%s", want[i].name);
    cr_assert_eq(r.regs_estimate, r.threads == 384 ? 168 : 255, "%s", want[i].name);
  }
}

/* Each rule of fg_check_bwd_sm90 rejects with its reason. */
Test(variant, bwdwg_rejections) {
  const char *base = "bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a";
  fagen_variant v = bwdwg(base);
  v.block_q = 128; /* d128 + 128 + a 128-column dQ share / 2 + 16 registers */
  expect_invalid(v, "needs about 336 registers, over the 240");
  /* One consumer takes all of dQ: d128 + 64 + 64 + 16 (ptxas serialized its
     products at 240). */
  v = bwdwg("bwdwg_d128_bq64_bk64_w8_s2_bf16_sm90a");
  expect_invalid(v, "needs about 272 registers, over the 240");
  v = bwdwg("bwdwg_d64_bq64_bk128_w12_s2_bf16_sm90a");
  expect_invalid(v, "dQ share of 32 columns");
  v = bwdwg("bwdwg_d96_bq128_bk128_w12_s2_bf16_sm90a"); /* 96-column shares are whole */
  expect_invalid(v, "needs about 288 registers");
  v = bwdwg("bwdwg_d64_bq128_bk64_w8_s2_bf16_sm90a");
  expect_invalid(v, "needs a consumer of its own");
  v = bwdwg(base);
  v.target = (fagen_target){80, 0};
  expect_invalid(v, "runs on sm_90a only");
  v.target = (fagen_target){90, 0};
  expect_invalid(v, "not sm_90");
  v.target = (fagen_target){100, 1};
  expect_invalid(v, "not sm_100a");
  const unsigned feats[] = {FAGEN_FEATURE_VARLEN, FAGEN_FEATURE_WINDOW, FAGEN_FEATURE_SOFTCAP,
                            FAGEN_FEATURE_ALIBI, FAGEN_FEATURE_DROPOUT};
  for (size_t i = 0; i < sizeof feats / sizeof feats[0]; i++) {
    v = bwdwg(base);
    v.features = feats[i];
    expect_invalid(v, "has no features");
  }
  const int dims[] = {32, 160, 192, 224};
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
    v = bwdwg(base);
    v.head_dim = dims[i];
    expect_invalid(v, "the wgmma backward has head_dim 64, 96, 128 or 256");
  }
  /* head_dim 256 has one tiling: 64 x 64 on 12 warps. */
  const char *d256[] = {"bwdwg_d256_bq64_bk128_w12_s2_bf16_sm90a",
                        "bwdwg_d256_bq128_bk64_w12_s2_bf16_sm90a",
                        "bwdwg_d256_bq64_bk64_w8_s2_bf16_sm90a"};
  for (size_t i = 0; i < sizeof d256 / sizeof d256[0]; i++)
    expect_invalid(bwdwg(d256[i]), "head_dim 256: the wgmma backward runs 12 warps on 64 x 64");
  v = bwdwg(base);
  v.warps = 16;
  expect_invalid(v, "(8 or 12 warps)");
  v = bwdwg(base);
  v.warps = 4;
  expect_invalid(v, "(8 or 12 warps)");
  v = bwdwg(base);
  v.block_kv = 64; /* two consumers own 128 keys */
  expect_invalid(v, "owns 64 keys (block_kv 128)");
  v = bwdwg("bwdwg_d128_bq32_bk64_w8_s2_bf16_sm90a");
  expect_invalid(v, "64 or 128 query rows");
  v = bwdwg(base);
  v.stages = 3;
  expect_invalid(v, "1 or 2 Q/dO buffers");
  v = bwdwg(base);
  v.pingpong = 1;
  expect_invalid(v, "only the wgmma forward family (fwdwg) has that knob, not bwdwg");
}

/* The heuristic (fg_default_bwd_sm90) for every case of the family, and the
 * default set: 12 bwdwg kernels on sm_90a, none elsewhere. */
Test(variant, bwdwg_heuristic_defaults) {
  const struct {
    int d, warps, bq, bk;
  } want[] = {{64, 12, 128, 128}, {96, 8, 64, 64}, {128, 12, 64, 128}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    for (int dt = 0; dt < 2; dt++)
      for (int causal = 0; causal < 2; causal++) {
        fagen_variant v;
        memset(&v, 0, sizeof v);
        v.op = FAGEN_OP_BWD_WGMMA;
        v.head_dim = want[i].d;
        v.dtype = dt ? FAGEN_DTYPE_BF16 : FAGEN_DTYPE_FP16;
        v.causal = causal;
        v.target = (fagen_target){90, 1};
        fg_default_tiles(&v);
        char name[FAGEN_VARIANT_NAME_MAX], reason[512] = "";
        fagen_variant_name(&v, name, sizeof name);
        cr_assert(v.warps == want[i].warps && v.block_q == want[i].bq &&
                      v.block_kv == want[i].bk && v.stages == 2 && v.pingpong == 0,
                  "d%d: %s", want[i].d, name);
        cr_assert_eq(fagen_variant_validate(&v, reason, sizeof reason), FAGEN_OK, "%s: %s", name,
                     reason);
      }
  const fagen_target targets[] = {{90, 1}, {90, 0}, {80, 0}, {100, 1}};
  for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
    fagen_variant defs[160];
    size_t n = 0;
    cr_assert_eq(fagen_default_variants(&targets[t], 1, defs, 160, &n), FAGEN_OK);
    int seen = 0;
    for (size_t i = 0; i < n; i++)
      if (defs[i].op == FAGEN_OP_BWD_WGMMA) {
        cr_assert(defs[i].head_dim == 64 || defs[i].head_dim == 96 || defs[i].head_dim == 128 ||
                  defs[i].head_dim == 256);
        seen++;
      }
    cr_assert_eq(seen, t == 0 ? 16 : 0, "sm_%d%s: %d bwdwg defaults", targets[t].arch,
                 targets[t].arch_specific ? "a" : "", seen);
  }
}

/* The axis table's 16 combinations, and how many of them are valid per
 * head_dim (d64: one and two consumers; d96: one consumer only; d128: one
 * and two consumers at 64 query rows; d256: 64 x 64 on 12 warps, the
 * consumers splitting head_dim), each in both stages. */
Test(variant, bwdwg_candidates) {
  const int dims[] = {64, 96, 128, 256}, valid_want[] = {4, 2, 2, 2};
  for (size_t i = 0; i < 4; i++) {
    fagen_variant base = bwdwg("bwdwg_d128_bq64_bk128_w12_s2_causal_bf16_sm90a");
    base.head_dim = dims[i];
    fagen_variant c[32];
    size_t n = 0;
    cr_assert_eq(fagen_variant_candidates(&base, c, 32, &n), FAGEN_OK);
    cr_assert_eq(n, 16, "2 block_q x 2 block_kv x 2 warps x 2 stages, got %zu", n);
    int valid = 0, stages2 = 0;
    for (size_t k = 0; k < n; k++) {
      cr_assert(c[k].op == FAGEN_OP_BWD_WGMMA && c[k].head_dim == dims[i] && c[k].causal == 1);
      if (fagen_variant_validate(&c[k], NULL, 0) != FAGEN_OK) continue;
      valid++;
      stages2 += c[k].stages == 2;
    }
    cr_assert_eq(valid, valid_want[i], "d%d: %d valid candidates", dims[i], valid);
    cr_assert_eq(stages2 * 2, valid, "d%d", dims[i]);
  }
}

Test(variant, head_dim_buckets) {
  cr_assert_eq(fg_head_dim_bucket(8), 32);
  cr_assert_eq(fg_head_dim_bucket(32), 32);
  cr_assert_eq(fg_head_dim_bucket(40), 64);
  cr_assert_eq(fg_head_dim_bucket(136), 160);
  cr_assert_eq(fg_head_dim_bucket(256), 256);
  cr_assert_eq(fg_head_dim_bucket(264), 0);
}

Test(status, strings_come_from_one_list) {
  cr_assert_str_eq(fagen_strerror(FAGEN_OK), "success");
  cr_assert_str_eq(fagen_status_name(FAGEN_E_COMPILE), "FAGEN_E_COMPILE");
  cr_assert_str_eq(fagen_strerror((fagen_status)999), "unknown status");
  cr_assert_str_eq(fagen_status_name((fagen_status)-1), "FAGEN_UNKNOWN");
  for (int s = 0; s <= FAGEN_E_INTERNAL; s++) {
    cr_assert_neq(strcmp(fagen_strerror((fagen_status)s), "unknown status"), 0, "%d", s);
    cr_assert_eq(strncmp(fagen_status_name((fagen_status)s), "FAGEN_", 6), 0);
  }
  cr_assert_str_eq(fagen_version(), FAGEN_VERSION_STRING);
}
