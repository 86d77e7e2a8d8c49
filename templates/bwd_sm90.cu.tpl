{#
  Backward attention for Hopper (sm_90a): wgmma on the tensor cores, TMA
  copies into an mbarrier pipeline, warp specialization.  Plain attention
  (causal or not, GQA); the non-deterministic mode (dQ by fp32 reductions).
  The runtime selects it on sm_90a for calls it supports, else bwd_sm80.

  A CTA owns block_kv = 64 * NC keys of one (batch, kv head) and has NC + 1
  warpgroups.  Warpgroup 0 is the producer: one thread loads K and V once,
  then Q and dO of each query block (of every query head of the GQA group)
  into a ring of STAGES buffers with TMA, and beside them the rows' LSE and
  D, also with TMA (the pre kernel lays them out in the workspace, padded to
  whole blocks: fg_bwd_params.stats).  (Non-tensor bulk copies of those rows
  made racecheck report hazards against the mbarrier-ordered reads; so did
  plain stores by the producer's lanes.)  Warpgroups 1..NC are consumers,
  each owning 64 keys, and
  compute per query block with the key as the M dimension of every product
  but dQ's:
      S^T = K Q^T, dP^T = V dO^T        (wgmma, both operands in shared memory)
      P^T = exp2(S^T scale log2e - LSE), dS^T = P^T (dP^T - D)   (registers)
      dV += P^T dO, dK += dS^T Q        (wgmma, P^T and dS^T from registers)
      dS^T -> shared memory; once every consumer's part is there:
      dQ = dS K                         (wgmma, a share of dQ per consumer)
      dQacc += dQ                       (fp32, into the workspace)
  dK and dV stay in registers over all query blocks and go out at the end.
  dQ of a step goes through an fp32 tile, head_dim / 32 slices [block_q][32]
  with the 128-byte swizzle, which one thread adds to dQacc with TMA
  reductions (cp.reduce.async.bulk.tensor, the sixth tensor map).  (One
  1-D bulk reduction of an unswizzled [block_q][head_dim] tile was
  1.02-1.21x over per-thread red.global.add.v2 on an H100 at d64 and d128,
  but its stores met 8-way bank conflicts; rows padded against those, one
  bulk reduction per row, ran at 0.52-0.91x; the swizzled tile 1.03-1.16x
  over the unswizzled one.)  SPLIT has room for the tile only with one
  Q/dO buffer (1.14-1.25x over two buffers and per-thread reductions);
  with two it keeps those.

  Shared layout: every tile is stored as 64-element slices of 128-byte rows
  with the 128-byte swizzle that TMA writes and wgmma reads (as in
  fwd_sm90).  K, Q, V and dO are read K-major for S^T and dP^T; dO, Q and K
  MN-major ("transposed") as the B operands of dV, dK and dQ; dS^T is
  written [key][query] so that it is dQ's A operand, MN-major.

  dQ's split: block_q / 64 row tiles of 64, each consumer takes one row
  tile and head_dim * (block_q / 64) / NC of its columns (whole 64-column
  slices, or all of them; gen/fg_variant.c checks the variant).

  head_dim 256 (SPLIT): a consumer's dK and dV of 64 keys would need 256
  registers a thread, so the two consumers share the CTA's 64 keys and each
  keeps half of head_dim's columns of dK and dV.  Consumer 0 computes S^T
  and P^T, consumer 1 dP^T at the same time; P^T goes through a shared tile
  (named barrier 2) to consumer 1, which forms dS^T; once dS^T is in its
  tile (barrier 3) both take P^T and dS^T from shared memory as the A
  operands of their halves of dV, dK and dQ.  Each issues its half of dV
  as soon as P^T is there (consumer 1 forms dS^T meanwhile).  dS^T comes
  from the bf16 P^T (no room for an fp32 tile): dQ's and dK's relative
  errors are ~3e-3 against ~2.4e-3 from fp32 P.
#}
{% include("common.cuh.tpl") %}
{% include("bwd_params.cuh.tpl") %}
{%
  local D, BQ, BK, W = v.head_dim, v.block_q, v.block_kv, v.warps
  NC = W // 4 - 1
  DP = ((D + 63) // 64) * 64
  local QT = BQ // 64
  -- head_dim 256: dK and dV of 64 keys do not fit one warpgroup's registers
  -- (256 per thread), so two consumers share the 64 keys and split head_dim.
  SPLIT = D > 128
  if SPLIT then
    assert(D == 256 and NC == 2 and BK == 64 and BQ == 64, "head_dim 256: 12 warps, 64 x 64 tiles")
    DQN = D // 2
  else
    assert(NC >= 1 and BK == 64 * NC, "block_kv must be 64 per consumer warpgroup")
    assert((BQ == 64 or BQ == 128) and NC % QT == 0, "block_q must be 64 or 128, one row tile of dQ per consumer or fewer")
    DQN = D * QT // NC
    assert(D % 16 == 0 and D <= 128, "head_dim")
  end
  assert(DQN == D or DQN % 64 == 0, "a consumer's share of dQ must be whole 64-column slices")
  local smem = (2 * BK + 2 * v.stages * BQ) * DP * 2 + (SPLIT and 4 or 2) * BK * BQ * 2 + 2 * v.stages * BQ * 4 + 1024
  DQ_BULK = not SPLIT or v.stages == 1
  if DQ_BULK then smem = smem + BQ * D * 4 end -- dQ's fp32 tile
  assert(smem == v.smem_bytes, "shared-memory layout disagrees with the generator's resource model")
  ty = v.dtype == "bf16" and "bf16" or "f16"
  CONSUMER_REGS = v.fwd_consumer_regs  -- gen/fg_variant.c's model, which checked the variant
  -- setmaxnreg moves registers between the warpgroups of a CTA, within what
  -- the launch gave it (THREADS times the launch bound's per-thread cap): an
  -- increase that does not fit that pool waits forever.  The producer gives
  -- all but 24 away.
  local launch_regs = math.min(255, (65536 // v.threads) // 8 * 8)
  BWD_PRODUCER_REGS = 24
  assert(BWD_PRODUCER_REGS * 128 + CONSUMER_REGS * 128 * NC <= launch_regs * v.threads, "register budget")
%}

namespace {

constexpr int D = {{ D }};         // compiled head dimension
constexpr int DP = {{ DP }};       // head dimension rounded up to whole 64-element slices
constexpr int SL = DP / 64;        // slices per tile row
constexpr int BQ = {{ BQ }};       // query rows per step
constexpr int BK = {{ BK }};       // keys per CTA
constexpr int NC = {{ NC }};       // consumer warpgroups (64 keys each, or SPLIT)
constexpr bool SPLIT = {{ SPLIT and "true" or "false" }}; // two consumers share 64 keys, half of head_dim each
constexpr int DH = SPLIT ? D / 2 : D; // a consumer's columns of dK and dV
constexpr int STAGES = {{ v.stages }}; // Q/dO buffers
constexpr int THREADS = {{ v.threads }};
constexpr bool CAUSAL = {{ v.causal }};
constexpr bool DET = false;
constexpr bool SM90 = true;
constexpr int PRE_THREADS = {{ v.bwd_aux_threads }}; // the pre and post kernels
{% include("features.cuh.tpl") %}
static_assert(!VARLEN && !WINDOW && !SOFTCAP && !ALIBI && !DROPOUT, "the wgmma backward has no features");
constexpr int QT = BQ / 64;        // 64-row tiles of dQ
constexpr int DQN = {{ DQN }};     // dQ columns per consumer
constexpr int NQ = BQ / 8;         // 8-column (query) groups of S^T and dP^T
constexpr int ND = DH / 8;         // 8-column groups of a consumer's dK, dV
constexpr int NDQ = DQN / 8;       // ... of a consumer's dQ
constexpr int Q_BYTES = BQ * DP * 2;
constexpr int KV_BYTES = BK * DP * 2;
constexpr int DS_BYTES = BK * BQ * 2;
// dQ of a step goes to dQacc from a swizzled fp32 tile by TMA reductions,
// except in SPLIT with two Q/dO buffers (no room: per-thread reductions).
constexpr bool DQ_BULK = {{ DQ_BULK and "true" or "false" }}; // !SPLIT || STAGES == 1
static_assert(THREADS == 128 * (NC + 1), "one producer warpgroup and NC consumers");

{% include("sm90_common.cuh.tpl") %}
struct fg_tmaps {
  fg_tmap q, k, v, dout;
  fg_tmap stats;  // fp32 [batch * heads_q * 2][stats_ld]: LSE rows, then D rows, per head
  fg_tmap dq_acc; // fp32 [batch * heads_q][seqlen_q][D]; box 32 columns x BQ rows, swizzled
};
static_assert(sizeof(fg_tmaps) == 768, "fg_tmaps size differs from the host's");

// S^T (+)= K Q^T (or dP^T = V dO^T) for one k16 step: A and B K-major.
__device__ __forceinline__ void fg_wgmma_st(float (&d)[NQ][4], fg_u64 da, fg_u64 db, int accumulate) {
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %{{ BQ // 2 + 2 }}, 0;\n"
               " wgmma.mma_async.sync.aligned.m64n{{ BQ }}k16.f32.{{ ty }}.{{ ty }}"
               " { {{ oplist(0, BQ // 2) }} }, %{{ BQ // 2 }}, %{{ BQ // 2 + 1 }}, p, 1, 1, 0, 0;\n}\n"
               : {{ accs(BQ) }}
               : "l"(da), "l"(db), "r"(accumulate));
}

{% DH = SPLIT and D // 2 or D %}
// dV += P^T dO (dK += dS^T Q) for one k16 step: A from registers, B MN-major.
__device__ __forceinline__ void fg_wgmma_kv(float (&d)[ND][4], const fg_u32 (&a)[4], fg_u64 db) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n{{ DH }}k16.f32.{{ ty }}.{{ ty }}"
               " { {{ oplist(0, DH // 2) }} }, { {{ oplist(DH // 2, 4) }} }, %{{ DH // 2 + 4 }}, 1, 1, 1, 1;\n"
               : {{ accs(DH) }}
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

// The same with A (P^T or dS^T, [key][query]) K-major in shared memory (SPLIT).
__device__ __forceinline__ void fg_wgmma_kv_ss(float (&d)[ND][4], fg_u64 da, fg_u64 db) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n{{ DH }}k16.f32.{{ ty }}.{{ ty }}"
               " { {{ oplist(0, DH // 2) }} }, %{{ DH // 2 }}, %{{ DH // 2 + 1 }}, 1, 1, 1, 0, 1;\n"
               : {{ accs(DH) }}
               : "l"(da), "l"(db));
}

// dQ (+)= dS K for one k16 step: A (dS^T stored [key][query]) and B (K) MN-major.
__device__ __forceinline__ void fg_wgmma_dq(float (&d)[NDQ][4], fg_u64 da, fg_u64 db, int accumulate) {
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %{{ DQN // 2 + 2 }}, 0;\n"
               " wgmma.mma_async.sync.aligned.m64n{{ DQN }}k16.f32.{{ ty }}.{{ ty }}"
               " { {{ oplist(0, DQN // 2) }} }, %{{ DQN // 2 }}, %{{ DQN // 2 + 1 }}, p, 1, 1, 1, 1;\n}\n"
               : {{ accs(DQN) }}
               : "l"(da), "l"(db), "r"(accumulate));
}

// Barriers: K and V loaded; for each stage Q/dO full (the TMA bytes) and
// empty (one arrival per consumer warp).
__device__ __forceinline__ fg_u32 fg_bar_kv(fg_u32 bars) { return bars; }
__device__ __forceinline__ fg_u32 fg_bar_full(fg_u32 bars, int s) { return bars + 8 * (1 + s); }
__device__ __forceinline__ fg_u32 fg_bar_empty(fg_u32 bars, int s) { return bars + 8 * (1 + STAGES + s); }
constexpr int NBARS = 1 + 2 * STAGES;

// 16-bit A fragments of a k16 step of a product from accumulators of the
// m64nN layout (as fwd_sm90's P).
__device__ __forceinline__ void fg_pack_a(const float (&x)[NQ][4], fg_u32 (&a)[BQ / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < BQ / 16; ++kk) {
    a[kk][0] = fg_pack(x[2 * kk][0], x[2 * kk][1]);
    a[kk][1] = fg_pack(x[2 * kk][2], x[2 * kk][3]);
    a[kk][2] = fg_pack(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[kk][3] = fg_pack(x[2 * kk + 1][2], x[2 * kk + 1][3]);
  }
}

// This warpgroup's half of dV += P^T dO (SPLIT: columns c0 ..), issued as
// soon as P^T is in its tile p_s.
__device__ __forceinline__ void fg_wgmma_dv_half(float (&dv)[ND][4], fg_u32 p_s, fg_u32 do_s, int c0) {
  const fg_u32 plo = fg_desc_lo(p_s, 16), dolo = fg_desc_lo(do_s + (c0 / 64) * BQ * 128, BQ * 128);
  fg_wg_fence();
#pragma unroll
  for (int kk = 0; kk < BQ / 16; ++kk)
    fg_wgmma_kv_ss(dv, fg_desc_step(plo, kk * 32), fg_desc_step(dolo, kk * 16 * 128));
  fg_wg_commit();
}

// Causal at head_dim 128 (two Q/dO buffers) a consumer issues the next
// step's S^T = K Q^T right after this step's dQ product, so that it runs
// while dQ goes through its tile.  On an H100 (fagen-bench --mode bwd, A/B
// of the templates) that measured 1.02-1.05x at d128 causal, S 1024-16384,
// but 0.97-1.00x non-causal and 0.94-0.96x at d64 causal (S^T's registers
// in flight beside dQ's: d64 128 x 128 spills), so only there.
constexpr bool EARLY_S = !SPLIT && STAGES > 1 && DQ_BULK && CAUSAL && D == 128;

// Issues S^T = K Q^T of 64 keys (K tile rows at sKw) and the Q tile at q_s
// (asynchronous; the caller commits).
__device__ __forceinline__ void fg_issue_st(float (&st)[NQ][4], fg_u32 sKw, fg_u32 q_s) {
  const fg_u32 klo = fg_desc_lo(sKw, 16), qlo = fg_desc_lo(q_s, 16);
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    const fg_u32 off = (kd & 3) * 32; // k16 step within a 128-byte row
    fg_wgmma_st(st, fg_desc_step(klo, (kd >> 2) * BK * 128 + off), fg_desc_step(qlo, (kd >> 2) * BQ * 128 + off),
                kd > 0);
  }
}

// Byte address of (row, col), col even, of dQ's fp32 tile: 32-column slices
// [BQ][32] of 128-byte rows with the 128-byte swizzle (as TMA reads it).
__device__ __forceinline__ fg_u32 fg_dq_at(fg_u32 tile, int row, int col) {
  return tile + (col >> 5) * BQ * 128 + row * 128 + ((((col & 31) >> 2) ^ (row & 7)) << 4) + (col & 3) * 4;
}

// Byte address of (row, col), col even, of a [key][query] tile (dS^T, P^T):
// 64-query slices of 128-byte rows with the 128-byte swizzle.
__device__ __forceinline__ fg_u32 fg_ds_at(fg_u32 tile, int row, int col) {
  return tile + (col >> 6) * BK * 128 + row * 128 + ((((col & 63) >> 3) ^ (row & 7)) << 4) + (col & 7) * 2;
}

// TMA: one box (block_q floats of one row) of the row statistics.
__device__ __forceinline__ void fg_tma_load_rows(fg_u32 dst, const fg_tmap &map, int col, int row, fg_u32 bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
               " [%0], [%1, {%2, %3}], [%4];"
               :: "r"(dst), "l"((fg_u64)&map), "r"(col), "r"(row), "r"(bar)
               : "memory");
}

} // namespace

{% include("bwd_aux.cuh.tpl") %}

// ---- dK, dV and dQacc ------------------------------------------------------
// minBlocks 1: setmaxnreg needs the register cap that a launch bound gives.
extern "C" __global__ void __launch_bounds__({{ v.threads }}, 1)
{{ v.name }}(const fg_bwd_params p, const __grid_constant__ fg_tmaps tm) {
  extern __shared__ unsigned char fg_smem_raw[];
  __shared__ alignas(8) fg_u64 fg_bars[NBARS];
  // The 128-byte swizzle repeats every 1024 bytes: tiles start on such a boundary.
  const fg_u32 raw = fg_smem_addr(fg_smem_raw);
  const fg_u32 sK = (raw + 1023u) & ~1023u;
  const fg_u32 sV = sK + KV_BYTES;
  const fg_u32 sQ = sV + KV_BYTES;               // STAGES tiles
  const fg_u32 sdO = sQ + STAGES * Q_BYTES;      // STAGES tiles
  const fg_u32 sdS = sdO + STAGES * Q_BYTES;     // 2 tiles [BK][BQ]
  const fg_u32 sP = sdS + 2 * DS_BYTES;          // SPLIT: 2 tiles [BK][BQ] of P^T
  const fg_u32 sDQ = sP + (SPLIT ? 2 * DS_BYTES : 0); // DQ_BULK: D / 32 slices [BQ][32] fp32
  // Per stage the step's rows: LSE (exp2 domain), then D (2 BQ floats).
  const fg_u32 sStat = sDQ + (DQ_BULK ? BQ * D * 4 : 0);
  const float *stat = reinterpret_cast<const float *>(fg_smem_raw + (sStat - raw));
  const fg_u32 bars = fg_smem_addr(fg_bars);
  const int wg = threadIdx.x / 128;

  // Causal: a CTA's work falls with its key block, and CTAs start in
  // blockIdx order as SMs free up.  So that the last to start are short,
  // the grid runs over chunks of p.lpt_heads (batch, kv head) pairs (the
  // first chunk takes the remainder), key block by key block inside a chunk:
  // heaviest first, with only a chunk's Q, dO and dQ rows in L2 at a time.
  const fg_i64 bid = blockIdx.x;
  int n_block;
  fg_i64 bhk;
  if (CAUSAL) {
    const fg_i64 nbh = (fg_i64)p.batch * p.heads_kv;
    const fg_i64 g = p.lpt_heads > 0 && p.lpt_heads < nbh ? p.lpt_heads : nbh; // 0: one chunk
    const fg_i64 rest = nbh - (nbh - 1) / g * g; // the first chunk's pairs, 1..g
    fg_i64 x = bid, base = 0, size = rest;
    if (x >= rest * p.kv_blocks) {
      x -= rest * p.kv_blocks;
      const fg_i64 c = x / (g * p.kv_blocks);
      x -= c * g * p.kv_blocks;
      base = rest + c * g;
      size = g;
    }
    n_block = (int)(x / size);
    bhk = base + x % size;
  } else {
    n_block = (int)(bid % p.kv_blocks);
    bhk = bid / p.kv_blocks;
  }
  const int hk = (int)(bhk % p.heads_kv), b = (int)(bhk / p.heads_kv);
  const int k0 = n_block * BK;
  const int len_q = p.seqlen_q, sk = p.seqlen_k;
  // Query i sees key j iff j < len_k and (causal) j <= i + diag: query
  // blocks before the first that sees key k0 are skipped.
  const int diag = sk - len_q;
  const int m_begin = CAUSAL ? max(0, k0 - diag) / BQ : 0;
  const int n_m = max(0, p.q_blocks - m_begin);
  const int total = n_m * p.group; // (head of the group, query block) steps

  if (threadIdx.x == 0) {
    fg_mbar_init(fg_bar_kv(bars), 1);
    for (int s = 0; s < STAGES; ++s) {
      fg_mbar_init(fg_bar_full(bars, s), 1);
      fg_mbar_init(fg_bar_empty(bars, s), 4 * NC);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    // Producer: one thread issues every copy.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 {{ BWD_PRODUCER_REGS }};");
    if (threadIdx.x == 0 && total > 0) {
      fg_mbar_expect(fg_bar_kv(bars), 2 * KV_BYTES);
      for (int sl = 0; sl < SL; ++sl) {
        fg_tma_load(sK + sl * BK * 128, tm.k, sl * 64, k0, hk, b, fg_bar_kv(bars));
        fg_tma_load(sV + sl * BK * 128, tm.v, sl * 64, k0, hk, b, fg_bar_kv(bars));
      }
      // Steps run over the group's heads, and within a head over its query
      // blocks from m_begin (the consumers' order).  (Counters, not it / n_m:
      // the producer has 24 registers.)
      int h = hk * p.group, m = m_begin;
      for (int it = 0; it < total; ++it) {
        const int s = it % STAGES;
        fg_mbar_wait(fg_bar_empty(bars, s), ((it / STAGES) & 1) ^ 1);
        fg_mbar_expect(fg_bar_full(bars, s), 2 * Q_BYTES + 2 * BQ * 4);
        for (int sl = 0; sl < SL; ++sl) {
          fg_tma_load(sQ + s * Q_BYTES + sl * BQ * 128, tm.q, sl * 64, m * BQ, h, b, fg_bar_full(bars, s));
          fg_tma_load(sdO + s * Q_BYTES + sl * BQ * 128, tm.dout, sl * 64, m * BQ, h, b, fg_bar_full(bars, s));
        }
        const int srow = (b * p.heads_q + h) * 2; // LSE row; D the next
        fg_tma_load_rows(sStat + s * 2 * BQ * 4, tm.stats, m * BQ, srow, fg_bar_full(bars, s));
        fg_tma_load_rows(sStat + (s * 2 + 1) * BQ * 4, tm.stats, m * BQ, srow + 1, fg_bar_full(bars, s));
        if (++m == p.q_blocks) {
          m = m_begin;
          ++h;
        }
      }
    }
    return;
  }

  // Consumers.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 {{ CONSUMER_REGS }};");
  const int cw = wg - 1;
  const int warp = (threadIdx.x / 32) & 3, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int kw = SPLIT ? 0 : 64 * cw;        // this warpgroup's first key in the CTA
  const int kw0 = k0 + kw;
  const int krow = kw0 + 16 * warp + g;      // this thread's keys: krow, krow + 8
  const fg_u32 sKw = sK + kw * 128, sVw = sV + kw * 128;
  const int c0 = SPLIT ? DH * cw : 0;        // this warpgroup's first column of dK, dV
  // This consumer's share of dQ: row tile mq, columns nq0 ...
  const int mq = cw % QT, nq0 = (cw / QT) * DQN;

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;

  if (total > 0) fg_mbar_wait(fg_bar_kv(bars), 0);
  float st[NQ][4]; // S^T of the step (EARLY_S: computed during the step before)
  if (EARLY_S && total > 0) {
    fg_mbar_wait(fg_bar_full(bars, 0), 0);
    fg_wg_fence();
    fg_issue_st(st, sKw, sQ);
    fg_wg_commit();
    fg_wg_wait<0>();
  }
  // Step it's head and query block (it / n_m, m_begin + it % n_m), carried
  // from step to step as the producer's are: no division in the loop.
  int h = hk * p.group, m = m_begin;
#pragma unroll 1
  for (int it = 0; it < total; ++it) {
    const int s = it % STAGES;
    const int q0 = m * BQ;
    const fg_u32 q_s = sQ + s * Q_BYTES, do_s = sdO + s * Q_BYTES;
    const fg_u32 ds_s = sdS + (it & 1) * DS_BYTES;
    fg_mbar_wait(fg_bar_full(bars, s), (it / STAGES) & 1);

    if constexpr (SPLIT) {
      // Consumer 0: S^T and P^T; consumer 1: dP^T, then dS^T from P^T.
      const fg_u32 p_s = sP + (it & 1) * DS_BYTES;
      float x[NQ][4];
      const fg_u32 alo = fg_desc_lo(cw == 0 ? sK : sV, 16), blo = fg_desc_lo(cw == 0 ? q_s : do_s, 16);
      fg_wg_fence();
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) {
        const fg_u32 off = (kd & 3) * 32;
        fg_wgmma_st(x, fg_desc_step(alo, (kd >> 2) * BK * 128 + off), fg_desc_step(blo, (kd >> 2) * BQ * 128 + off),
                    kd > 0);
      }
      fg_wg_commit();
      fg_wg_wait<0>();
      // Element (n, e): key krow + 8 (e >> 1), query q0 + 8 n + 2 t4 + (e & 1);
      // in the [key][query] tiles at fg_ds_at(row, 8 n + 2 t4).
      const float *ls = stat + s * 2 * BQ, *ds = ls + BQ;
      const int r0 = 16 * warp + g;
      if (cw == 0) {
        const bool mask = kw0 + 64 > sk || (CAUSAL && kw0 + 63 > q0 + diag);
#pragma unroll
        for (int n = 0; n < NQ; ++n) {
          const float2 l2 = *reinterpret_cast<const float2 *>(ls + 8 * n + 2 * t4);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float pv = fg_ex2(fmaf(x[n][e], p.scale_log2, -((e & 1) ? l2.y : l2.x)));
            if (mask) {
              const int key = krow + 8 * (e >> 1), qi = q0 + 8 * n + 2 * t4 + (e & 1);
              if (key >= sk || (CAUSAL && key > qi + diag)) pv = 0.f;
            }
            x[n][e] = pv;
          }
#pragma unroll
          for (int h2 = 0; h2 < 2; ++h2)
            asm volatile("st.shared.u32 [%0], %1;" :: "r"(fg_ds_at(p_s, r0 + 8 * h2, 8 * n + 2 * t4)),
                         "r"(fg_pack(x[n][2 * h2], x[n][2 * h2 + 1])) : "memory");
        }
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        // The last step's bulk reduction has read the dQ tile before anyone
        // passes barrier 2 or 3 (both wait for this thread).
        if (DQ_BULK && threadIdx.x == 128) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
        asm volatile("bar.arrive 2, 256;" ::: "memory"); // P^T is in its tile
        fg_wgmma_dv_half(dv, p_s, do_s, c0);
        asm volatile("bar.sync 3, 256;" ::: "memory");   // and dS^T in its
      } else {
        asm volatile("bar.sync 2, 256;" ::: "memory");
        fg_wgmma_dv_half(dv, p_s, do_s, c0); // runs while this warpgroup forms dS^T
#pragma unroll
        for (int n = 0; n < NQ; ++n) {
          const float2 d2 = *reinterpret_cast<const float2 *>(ds + 8 * n + 2 * t4);
#pragma unroll
          for (int h2 = 0; h2 < 2; ++h2) {
            fg_u32 pp;
            asm volatile("ld.shared.u32 %0, [%1];" : "=r"(pp) : "r"(fg_ds_at(p_s, r0 + 8 * h2, 8 * n + 2 * t4)) : "memory");
            const float p0 = fg_to_float((fg_u16)(pp & 0xffffu)), p1 = fg_to_float((fg_u16)(pp >> 16));
            asm volatile("st.shared.u32 [%0], %1;" :: "r"(fg_ds_at(ds_s, r0 + 8 * h2, 8 * n + 2 * t4)),
                         "r"(fg_pack(p0 * (x[n][2 * h2] - d2.x), p1 * (x[n][2 * h2 + 1] - d2.y))) : "memory");
          }
        }
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        asm volatile("bar.arrive 3, 256;" ::: "memory");
      }
      // This warpgroup's half of dK += dS^T Q.
      const fg_u32 dslo = fg_desc_lo(ds_s, 16), qlo = fg_desc_lo(q_s + (c0 / 64) * BQ * 128, BQ * 128);
      fg_wg_fence();
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk)
        fg_wgmma_kv_ss(dk, fg_desc_step(dslo, kk * 32), fg_desc_step(qlo, kk * 16 * 128));
      fg_wg_commit();
    } else {
      float dp[NQ][4];
      if (!EARLY_S) {
        fg_wg_fence();
        fg_issue_st(st, sKw, q_s);
        fg_wg_commit();
      }
      const fg_u32 vlo = fg_desc_lo(sVw, 16), dolo = fg_desc_lo(do_s, 16);
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) {
        const fg_u32 off = (kd & 3) * 32;
        fg_wgmma_st(dp, fg_desc_step(vlo, (kd >> 2) * BK * 128 + off), fg_desc_step(dolo, (kd >> 2) * BQ * 128 + off),
                    kd > 0);
      }
      fg_wg_commit();
      fg_wg_wait<1>(); // S^T; dP^T may still run (groups complete in order)

      // Element (n, e): key krow + 8 (e >> 1), query q0 + 8 n + 2 t4 + (e & 1).
      const float *ls = stat + s * 2 * BQ, *ds = ls + BQ;
      const bool mask = kw0 + 64 > sk || (CAUSAL && kw0 + 63 > q0 + diag);
#pragma unroll
      for (int n = 0; n < NQ; ++n) {
        const float2 l2 = *reinterpret_cast<const float2 *>(ls + 8 * n + 2 * t4);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float pv = fg_ex2(fmaf(st[n][e], p.scale_log2, -((e & 1) ? l2.y : l2.x)));
          if (mask) {
            const int key = krow + 8 * (e >> 1), qi = q0 + 8 * n + 2 * t4 + (e & 1);
            if (key >= sk || (CAUSAL && key > qi + diag)) pv = 0.f;
          }
          st[n][e] = pv;
        }
      }
      fg_wg_wait<0>();
#pragma unroll
      for (int n = 0; n < NQ; ++n) {
        const float2 d2 = *reinterpret_cast<const float2 *>(ds + 8 * n + 2 * t4);
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[n][e] = st[n][e] * (dp[n][e] - ((e & 1) ? d2.y : d2.x));
      }
      fg_u32 ap[BQ / 16][4], ads[BQ / 16][4];
      fg_pack_a(st, ap);
      fg_pack_a(dp, ads);

      // dS^T into its shared tile ([key][query], swizzled 64-query slices)
      // for dQ; the async proxy (wgmma) reads it after the fence.
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int r = 64 * cw + 16 * warp + g + 8 * (i & 1), col = 16 * kk + 8 * (i >> 1) + 2 * t4;
          asm volatile("st.shared.u32 [%0], %1;" :: "r"(fg_ds_at(ds_s, r, col)), "r"(ads[kk][i]) : "memory");
        }
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");

      const fg_u32 dotlo = fg_desc_lo(do_s, BQ * 128), qtlo = fg_desc_lo(q_s, BQ * 128); // MN-major
      fg_wg_fence();
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk) fg_wgmma_kv(dv, ap[kk], fg_desc_step(dotlo, kk * 16 * 128));
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk) fg_wgmma_kv(dk, ads[kk], fg_desc_step(qtlo, kk * 16 * 128));
      fg_wg_commit();
      // Every consumer's keys of dS^T are in the tile (named barrier 1); the
      // last step's bulk reduction has read the dQ tile.
      if (DQ_BULK && threadIdx.x == 128) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
      asm volatile("bar.sync 1, %0;" :: "n"(128 * NC) : "memory");
    }
    float dq[NDQ][4];
    const fg_u32 dsqlo = fg_desc_lo(ds_s + mq * BK * 128, BK * 128);
    const fg_u32 kqlo = fg_desc_lo(sK + (nq0 / 64) * BK * 128, BK * 128);
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk)
      fg_wgmma_dq(dq, fg_desc_step(dsqlo, kk * 16 * 128), fg_desc_step(kqlo, kk * 16 * 128), kk > 0);
    fg_wg_commit();
    if constexpr (EARLY_S) {
      // The next step's S^T runs while this one's dQ goes out.  It is issued
      // on every step (after the last one on a buffer the producer no longer
      // writes; the result is not used) and complete before the loop turns:
      // products in flight across a branch that defines them or across the
      // loop's back edge make ptxas serialize every wgmma of the kernel.
      // dV and dK first: their A fragments in registers are then free.
      const int s1 = (it + 1) % STAGES;
      fg_wg_wait<1>();
      if (it + 1 < total) fg_mbar_wait(fg_bar_full(bars, s1), ((it + 1) / STAGES) & 1);
      fg_wg_fence();
      fg_issue_st(st, sKw, sQ + s1 * Q_BYTES);
      fg_wg_commit();
      fg_wg_wait<1>();
    } else {
      fg_wg_wait<0>();
    }
    fg_release(fg_bar_empty(bars, s));

    if constexpr (DQ_BULK) {
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        const int r = 64 * mq + 16 * warp + g + 8 * h2;
#pragma unroll
        for (int n = 0; n < NDQ; ++n)
          asm volatile("st.shared.v2.f32 [%0], {%1, %2};" :: "r"(fg_dq_at(sDQ, r, nq0 + 8 * n + 2 * t4)),
                       "f"(dq[n][2 * h2]), "f"(dq[n][2 * h2 + 1]) : "memory");
      }
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      asm volatile("bar.sync 4, %0;" :: "n"(128 * NC) : "memory");
      if (threadIdx.x == 128) { // rows past len_q fall outside the map
        const int bh = b * p.heads_q + h;
#pragma unroll
        for (int sl = 0; sl < D / 32; ++sl)
          asm volatile("cp.reduce.async.bulk.tensor.3d.global.shared::cta.add.tile.bulk_group"
                       " [%0, {%1, %2, %3}], [%4];"
                       :: "l"((fg_u64)&tm.dq_acc), "r"(32 * sl), "r"(q0), "r"(bh), "r"(sDQ + sl * BQ * 128)
                       : "memory");
        asm volatile("cp.async.bulk.commit_group;" ::: "memory");
      }
      if (EARLY_S) fg_wg_wait<0>(); // the next S^T
    } else {
      float *acc = p.dq_acc + ((fg_i64)b * p.heads_q + h) * p.seqlen_q * D;
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        const int row = q0 + 64 * mq + 16 * warp + g + 8 * h2;
        if (row < len_q) {
#pragma unroll
          for (int n = 0; n < NDQ; ++n)
            fg_red2(acc + (fg_i64)row * D + nq0 + 8 * n + 2 * t4, dq[n][2 * h2], dq[n][2 * h2 + 1]);
        }
      }
    }
    const bool mwrap = m == p.q_blocks - 1;
    m = mwrap ? m_begin : m + 1;
    h += mwrap;
  }

  // The last bulk reduction is done before the CTA (and its tile) goes.
  if (DQ_BULK && threadIdx.x == 128) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
  // Epilogue: dK (scaled) and dV from the registers; keys no query sees get
  // zeros.
  fg_u16 *dkg = (fg_u16 *)p.dk + b * p.dk_stride_b + hk * p.dk_stride_h;
  fg_u16 *dvg = (fg_u16 *)p.dv + b * p.dv_stride_b + hk * p.dv_stride_h;
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    const int row = krow + 8 * h2;
    if (row < sk) {
#pragma unroll
      for (int n = 0; n < ND; ++n) {
        const int col = c0 + 8 * n + 2 * t4;
        if (col < p.head_dim) {
          *reinterpret_cast<fg_u32 *>(dkg + (fg_i64)row * p.dk_stride_s + col) =
              fg_pack(dk[n][2 * h2] * p.scale, dk[n][2 * h2 + 1] * p.scale);
          *reinterpret_cast<fg_u32 *>(dvg + (fg_i64)row * p.dv_stride_s + col) =
              fg_pack(dv[n][2 * h2], dv[n][2 * h2 + 1]);
        }
      }
    }
  }
}
