{#
  Forward attention for Hopper (sm_90a): wgmma on the tensor cores, TMA
  copies into an mbarrier pipeline, warp specialization.  Features: softcap
  and sequence lengths (packed and padded; the other feature bits select the
  sm80 family).

  A CTA takes block_q = 64 * NC query rows of one (batch, head) and has NC + 1
  warpgroups.  Warpgroup 0 is the producer: it gives its registers away
  (setmaxnreg) and one of its threads issues every copy, Q once and then K(j)
  and V(j) for each tile j into a ring of STAGES buffers, each copy completing
  on its own mbarrier.  Warpgroups 1..NC are consumers, each owning 64 rows:
      S = Q K(j)^T (wgmma, Q and K from shared memory) -> release K(j) ->
      mask, online softmax in registers -> O += P V(j) (wgmma, P from
      registers) -> release V(j)

  Shared layout: every tile is stored as head_dim / 64 slices of [rows][64]
  elements, 128-byte rows, with the 128-byte swizzle (16-byte chunk c of row r
  at chunk c ^ (r % 8)) that TMA writes and wgmma reads.  Descriptors: Q and K
  are K-major (the reduction dimension contiguous), V is MN-major (head_dim
  contiguous, "transposed" for the product P V).

  Tiles go from the last to the first, as in fwd_sm80: tiles that need a mask
  (sequence end, causal diagonal) first; causally invisible tiles are never
  loaded.  The softmax is fwd_sm80's (exp2 domain, lazy rescale, per-thread
  partial row sums).  O is normalized once and stored from the accumulators.

  The runtime launches a persistent grid (at most one CTA per SM, each
  looping over work items, see fg_tile_of), so the next tile's Q and K/V
  copies overlap the end of the current one: short sequences lose less time
  to each CTA's start and finish.  With the prefetch_q knob (`_pq` in names)
  the shared memory holds two Q tiles, so the producer loads the next output
  tile's Q while the consumers still work on this one (with one, it waits
  until they are done with it).

  Within a consumer the products are software-pipelined (FlashAttention-3's
  intra-warpgroup overlap): S(j) = Q K(j)^T and O += P(j-1) V(j-1) are issued
  together and the softmax of S(j) runs while the second finishes; on an
  H100 that measured 1.02-1.09x at d128 and d256.  With the pingpong knob
  the consumers also take turns issuing their products (named barriers):
  one warpgroup's products run while the others do their softmax.
#}
{% include("common.cuh.tpl") %}
{% include("fwd_params.cuh.tpl") %}
{%
  local D, BQ, BK, W = v.head_dim, v.block_q, v.block_kv, v.warps
  NC = W // 4 - 1
  DP = ((D + 63) // 64) * 64
  assert(NC >= 1 and BQ == 64 * NC, "block_q must be 64 per consumer warpgroup")
  assert(BK % 16 == 0 and BK <= 256 and D % 16 == 0, "block_kv and head_dim must be multiples of 16")
  local QB = v.prefetch_q and 2 or 1
  local smem = (QB * BQ + 2 * v.stages * BK + (v.fwd_o_smem and BQ or 0)) * DP * 2 + 1024
  assert(smem == v.smem_bytes, "shared-memory layout disagrees with the generator's resource model")
  local ty = v.dtype == "bf16" and "bf16" or "f16"
  CONSUMER_REGS = v.fwd_consumer_regs  -- gen/fg_variant.c's model, which checked the variant
%}

namespace {

constexpr int D = {{ D }};         // compiled head dimension
constexpr int DP = {{ DP }};       // head dimension rounded up to whole 64-element slices
constexpr int SL = DP / 64;        // slices per tile row
constexpr int BQ = {{ BQ }};       // query rows per CTA
constexpr int BK = {{ BK }};       // keys per tile
constexpr int NC = {{ NC }};       // consumer warpgroups (64 rows each)
constexpr int STAGES = {{ v.stages }};
constexpr int THREADS = {{ v.threads }};
constexpr bool CAUSAL = {{ v.causal }};
{% include("features.cuh.tpl") %}
static_assert(!WINDOW && !ALIBI && !DROPOUT, "the wgmma kernel has softcap and sequence lengths only");
constexpr int NS = BK / 8;         // 8-key column groups of S
constexpr int NO = D / 8;          // 8-column groups of O
constexpr int Q_BYTES = BQ * DP * 2;
// O leaves through its own shared tile (swizzled slices, as Q) and a TMA
// store above head_dim 64 where the tile fits the shared memory (the
// generator decides: gen/fg_variant.c), else straight from the accumulators.
constexpr bool O_SMEM = {{ v.fwd_o_smem }};
// (A tile's TMA store would write the rows past a packed sequence's end,
// which are the next sequence's: the generator turns it off with VARLEN.)
static_assert(!VARLEN || !O_SMEM, "O goes out through registers with sequence lengths");
constexpr int KV_BYTES = BK * DP * 2;
// Q tiles in shared memory: 2 with the prefetch_q knob (the producer loads
// the next output tile's Q while the consumers finish this one), else 1.
constexpr int QB = {{ QB }};
constexpr float FG_RESCALE_SLACK = 8.f; // log2 units: P <= 256 between rescales
static_assert(THREADS == 128 * (NC + 1), "one producer warpgroup and NC consumers");

{% include("sm90_common.cuh.tpl") %}
struct fg_tmaps {
  fg_tmap q, k, v, o; // o: 64-row boxes, used where O_SMEM
};
static_assert(sizeof(fg_tmaps) == 512, "fg_tmaps size differs from the host's");

// S (+)= Q K^T for one k16 step: A and B K-major in shared memory.
__device__ __forceinline__ void fg_wgmma_qk(float (&d)[NS][4], fg_u64 da, fg_u64 db, int accumulate) {
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %{{ BK // 2 + 2 }}, 0;\n"
               " wgmma.mma_async.sync.aligned.m64n{{ BK }}k16.f32.{{ ty }}.{{ ty }}"
               " { {{ oplist(0, BK // 2) }} }, %{{ BK // 2 }}, %{{ BK // 2 + 1 }}, p, 1, 1, 0, 0;\n}\n"
               : {{ accs(BK) }}
               : "l"(da), "l"(db), "r"(accumulate));
}

// O += P V for one k16 step: P (A) from registers, V (B) MN-major in shared memory.
__device__ __forceinline__ void fg_wgmma_pv(float (&d)[NO][4], const fg_u32 (&a)[4], fg_u64 db) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n{{ D }}k16.f32.{{ ty }}.{{ ty }}"
               " { {{ oplist(0, D // 2) }} }, { {{ oplist(D // 2, 4) }} }, %{{ D // 2 + 4 }}, 1, 1, 1, 1;\n"
               : {{ accs(D) }}
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

// What one consumer warpgroup knows.
struct fg_cons {
  fg_u32 sQ, sK, sV, bars;
  int row0;     // first query row of this warpgroup (in the sequence)
  int wrow;     // first row of this thread's warp within the sequence
  int g, t;
  int sk, diag;
};

// Barrier addresses: Q full and Q empty for each Q tile, then for each stage
// K full, V full, K empty and V empty (K(j) is free once S(j) is computed,
// V(j) half a step later, once O += P V(j) is).
__device__ __forceinline__ fg_u32 fg_bar_q(fg_u32 bars, int b) { return bars + 8 * b; }
__device__ __forceinline__ fg_u32 fg_bar_qe(fg_u32 bars, int b) { return bars + 8 * (QB + b); }
__device__ __forceinline__ fg_u32 fg_bar_k(fg_u32 bars, int s) { return bars + 8 * (2 * QB + s); }
__device__ __forceinline__ fg_u32 fg_bar_v(fg_u32 bars, int s) { return bars + 8 * (2 * QB + STAGES + s); }
__device__ __forceinline__ fg_u32 fg_bar_ke(fg_u32 bars, int s) { return bars + 8 * (2 * QB + 2 * STAGES + s); }
__device__ __forceinline__ fg_u32 fg_bar_ve(fg_u32 bars, int s) { return bars + 8 * (2 * QB + 3 * STAGES + s); }
constexpr int NBARS = 2 * QB + 4 * STAGES;

// One output tile: 64 * NC query rows of one (batch, head).
struct fg_tile {
  int b, h, hk, q0;
  int n_tiles; // K/V tiles its rows see (tiles past them are never loaded)
  bool none;   // the missing second half of a causal item: nothing to do
  // Its sequence (VARLEN: fg_sequence; else the call's lengths): the query
  // and key counts, and where row 0 of each is in the TMA maps (packed: the
  // offset into the [total, heads, head_dim] buffer, batch coordinate 0).
  int len_q, len_k, q_row0, k_row0, tb;
  bool packed;
};

// The persistent schedule.  CTA x takes work items x, x + gridDim.x, ...;
// without causal masking an item is one tile, with it a pair of tiles of one
// head, its longest and its shortest remaining q block (q_blocks - 1 - i and
// i), so that every item costs about the same and the static round-robin
// stays balanced.  (One causal tile per item measured up to 1.7x slower on
// an H100: with 128 q blocks per head and 132 SMs each CTA kept drawing
// blocks of nearly the same length.)  The q blocks of one head are
// neighbours, so the CTAs running at any time share K and V in L2 (ordering
// all heads' longest causal blocks first instead measured up to 1.5x slower:
// each wave re-read K and V from memory).
//
// With sequence lengths items differ in cost (a short sequence's q blocks
// see few keys, those past its end none), and a static split of them
// measured 0.62-0.86 of packed equal lengths at d128 on an H100.  There the
// schedule is dynamic: the producer takes the next item from the counter
// p.sched (zeroed by the runtime before the launch) whenever a Q buffer
// frees, and passes each tile to the consumers through a word per Q buffer
// (fg_slots), published by its arrival on that buffer's "full" barrier (an
// mbarrier arrival releases, a completed wait acquires; compute-sanitizer's
// racecheck does not count that as ordering and reports the word: st.async,
// which would count its bytes on the barrier as TMA does, needs a cluster
// launch); -1 ends the CTA's work.  Tiles with nothing to load still go through, for
// their LSE (-inf) and zeros.
constexpr bool DYN = VARLEN;
constexpr int PER_ITEM = CAUSAL ? 2 : 1;
__device__ __forceinline__ int fg_items(const fg_fwd_params &p) {
  return (CAUSAL ? (p.q_blocks + 1) / 2 : p.q_blocks) * p.heads_q * p.batch;
}

// Tile `half` (0 or 1) of work item `item`; `none` marks the missing second
// half of a causal item (the middle q block of an odd count has no partner).
__device__ __forceinline__ fg_tile fg_tile_of(const fg_fwd_params &p, int item, int half) {
  fg_tile T;
  const int per_bh = CAUSAL ? (p.q_blocks + 1) / 2 : p.q_blocks;
  const int bh = item / per_bh, i = item % per_bh;
  const int q_block = CAUSAL ? (half ? i : p.q_blocks - 1 - i) : i;
  T.h = bh % p.heads_q;
  T.b = bh / p.heads_q;
  T.hk = T.h / p.group;
  T.q0 = q_block * BQ;
  T.len_q = p.seqlen_q;
  T.len_k = p.seqlen_k;
  T.q_row0 = T.k_row0 = 0;
  T.tb = T.b;
  T.packed = false;
  if (VARLEN) {
    const fg_seq sq = fg_sequence(p, T.b);
    T.len_q = sq.len_q;
    T.len_k = sq.len_k;
    T.q_row0 = (int)sq.q_row0;
    T.k_row0 = (int)sq.k_row0;
    T.packed = sq.packed;
    T.tb = sq.packed ? 0 : T.b;
  }
  // Query i sees key j iff j < len_k and (causal) j <= i + diag: aligned
  // bottom-right when len_q != len_k.
  const int len_q = T.len_q, sk = T.len_k;
  int kv_end = T.q0 < len_q ? sk : 0;
  if (CAUSAL) kv_end = min(kv_end, min(T.q0 + BQ, len_q) + sk - len_q);
  T.none = CAUSAL && half && i == p.q_blocks - 1 - i;
  T.n_tiles = kv_end > 0 && !T.none ? (kv_end + BK - 1) / BK : 0;
  return T;
}

// Ping-pong (the variant's pingpong knob) between the consumer warpgroups:
// each takes its turn to issue its products (named barrier 1 + its index,
// counted by its own 128 threads and the 128 of the warpgroup before it), so
// one warpgroup's products run on the tensor cores while the others do their
// softmax.  On an H100 it measured 0.94-0.99x at d64, 0.98-1.04x at d128-256.
constexpr bool PINGPONG = {{ v.pingpong }};
static_assert(!PINGPONG || NC > 1, "ping-pong needs two or more consumers");
__device__ __forceinline__ void fg_turn_wait(int cw) {
  if (PINGPONG) asm volatile("bar.sync %0, 256;" :: "r"(1 + cw) : "memory");
}
__device__ __forceinline__ void fg_turn_pass(int cw) {
  if (PINGPONG) asm volatile("bar.arrive %0, 256;" :: "r"(1 + (cw + 1) % NC) : "memory");
}

// Issues S = Q K^T from the K tile at sK (asynchronous; the caller commits).
__device__ __forceinline__ void fg_issue_qk(const fg_cons &c, fg_u32 sK, float (&sc)[NS][4]) {
  const fg_u32 qlo = fg_desc_lo(c.sQ, 16), klo = fg_desc_lo(sK, 16);
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    const fg_u32 off = (kd & 3) * 32; // k16 step within a 128-byte row
    const fg_u64 da = fg_desc_step(qlo, (kd >> 2) * BQ * 128 + off);
    const fg_u64 db = fg_desc_step(klo, (kd >> 2) * BK * 128 + off);
    fg_wgmma_qk(sc, da, db, kd > 0);
  }
}

// Issues O += P V from the V tile at sV (asynchronous; the caller commits).
__device__ __forceinline__ void fg_issue_pv(fg_u32 sV, const fg_u32 (&a)[BK / 16][4], float (&o)[NO][4]) {
  const fg_u32 vlo = fg_desc_lo(sV, BK * 128);
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) fg_wgmma_pv(o, a[kk], fg_desc_step(vlo, kk * 16 * 128));
}

// The online softmax of S(j) for this thread's two rows: softcap, mask (MASK:
// sequence end and causal diagonal), new running maxima, P = exp in place and
// the row sums.  O is not touched (its last product may still be running):
// when a maximum grew by more than the slack, `alpha` holds the factors O
// must be scaled by before the next product and the result is true.
template <bool MASK>
__device__ __forceinline__ bool fg_softmax(const fg_fwd_params &p, const fg_cons &c, int j, float (&sc)[NS][4],
                                           float (&m)[2], float (&l)[2], float (&alpha)[2]) {
  // Element (n, e) holds key j*BK + 8n + 2t + (e&1) of row wrow + g + 8*(e>>1).
  const int kbase = j * BK + 2 * c.t;
  if (SOFTCAP) // cap * tanh(s * scale / cap), in units of cap (fg_score_unit)
    fg_softcap(p, *reinterpret_cast<float(*)[1][NS][4]>(&sc));
  if (MASK) {
    const int klim = c.sk - kbase;                   // key < len_k
    const int dlim = c.wrow + c.g + c.diag - kbase;  // key <= row + diag
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kc = n * 8 + (e & 1);
        bool visible = kc < klim;
        if (CAUSAL) visible = visible && kc - 8 * (e >> 1) <= dlim;
        if (!visible) sc[n][e] = FG_NEG_INF;
      }
  }
  const float sl2 = fg_score_unit(p); // softmax multiplier: scale * log2 e, or cap * log2 e
  float mx[2];
  bool grow = false;
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    float r = FG_NEG_INF;
#pragma unroll
    for (int n = 0; n < NS; ++n) r = fmaxf(r, fmaxf(sc[n][2 * h2], sc[n][2 * h2 + 1]));
    r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, 1));
    r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, 2));
    mx[h2] = r * sl2;
    grow |= mx[h2] > m[h2] + FG_RESCALE_SLACK;
  }
  const bool rescale = __any_sync(0xffffffffu, grow);
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    alpha[h2] = 1.f;
    if (rescale) {
      const float m_new = fmaxf(m[h2], mx[h2]);
      alpha[h2] = m_new == FG_NEG_INF ? 1.f : fg_ex2(m[h2] - m_new);
      m[h2] = m_new;
      l[h2] *= alpha[h2];
    }
  }
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    const float m_use = m[h2] == FG_NEG_INF ? 0.f : m[h2];
    float rs = 0.f;
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int e = 2 * h2; e < 2 * h2 + 2; ++e) {
        sc[n][e] = fg_ex2(fmaf(sc[n][e], sl2, -m_use));
        rs += sc[n][e];
      }
    l[h2] += rs;
  }
  return rescale;
}

// P (16-bit, the A operand of O += P V) from the exponentials in S.
__device__ __forceinline__ void fg_pack_p(const float (&sc)[NS][4], fg_u32 (&a)[BK / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) {
    a[kk][0] = fg_pack(sc[2 * kk][0], sc[2 * kk][1]);
    a[kk][1] = fg_pack(sc[2 * kk][2], sc[2 * kk][3]);
    a[kk][2] = fg_pack(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
    a[kk][3] = fg_pack(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
  }
}

__device__ __forceinline__ void fg_scale_o(float (&o)[NO][4], const float (&alpha)[2]) {
#pragma unroll
  for (int n = 0; n < NO; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] *= alpha[e >> 1];
}

// The K/V ring position of a pipeline step: the buffer and phase of its K
// tile and those of the step before (its V), carried from step to step
// (select, no branch) instead of divided out of the step count.
struct fg_ring {
  int s, ph, sp, php;
};
__device__ __forceinline__ fg_ring fg_ring_at(int it) { return {it % STAGES, (it / STAGES) & 1, 0, 0}; }
__device__ __forceinline__ void fg_ring_next(fg_ring &r) {
  r.sp = r.s;
  r.php = r.ph;
  const bool wrap = r.s == STAGES - 1;
  r.s = wrap ? 0 : r.s + 1;
  r.ph = wrap ? r.ph ^ 1 : r.ph;
}

// With sequence lengths the first K/V tile of an output tile (its last, the
// one holding the sequence's end) may reach past the sequence's keys, into
// the next packed sequence or the padding, which TMA loads as it finds
// them.  Their scores are masked, so P is 0 there, but 0 * NaN or Inf in V
// is NaN: the consumers zero V's rows from `from` on, between them, before
// the first product reads it.  (Rows past the whole buffer are zero-filled
// by TMA.)  All consumers of the CTA work on the same output tile, so all
// come here; named barrier 7 (1..3: ping-pong, 4..6: the O store).
__device__ __forceinline__ void fg_zero_v_tail(const fg_cons &c, const fg_ring &r, int from) {
  fg_mbar_wait(fg_bar_v(c.bars, r.s), r.ph);
  const int chunks = (BK - from) * 8; // 16-byte chunks per 128-byte-row slice
  const int tid = threadIdx.x - 128;
  for (int x = tid; x < SL * chunks; x += NC * 128) {
    const int sl = x / chunks, q = x % chunks;
    const fg_u32 at = c.sV + r.s * KV_BYTES + sl * BK * 128 + from * 128 + q * 16;
    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" :: "r"(at), "r"(0u) : "memory");
  }
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // visible to wgmma
  asm volatile("bar.sync 7, %0;" :: "n"(NC * 128) : "memory");
}

// Pipeline step `it` (K/V tile j) after the first of a tile: S = Q K(j)^T and
// O += P V of the step before are issued together; the softmax of S runs
// while the tensor cores finish O += P V (commit groups complete in order,
// so wait_group 1 waits for S only).  Only straight-line code lies between
// a product's issue and its wait: ptxas serializes the products when an
// accumulator in flight meets a branch it cannot see through.
template <bool MASK>
__device__ __forceinline__ void fg_step(const fg_fwd_params &p, const fg_cons &c, int cw, int j, const fg_ring &r,
                                        float (&sc)[NS][4], fg_u32 (&a)[BK / 16][4], float (&o)[NO][4],
                                        float (&m)[2], float (&l)[2]) {
  const int s = r.s, sp = r.sp;
  fg_mbar_wait(fg_bar_k(c.bars, s), r.ph);
  fg_mbar_wait(fg_bar_v(c.bars, sp), r.php);
  fg_turn_wait(cw);
  fg_wg_fence();
  fg_issue_qk(c, c.sK + s * KV_BYTES, sc);
  fg_wg_commit();
  fg_issue_pv(c.sV + sp * KV_BYTES, a, o);
  fg_wg_commit();
  fg_turn_pass(cw);
  fg_wg_wait<1>();
  fg_release(fg_bar_ke(c.bars, s));
  float alpha[2];
  const bool rescale = fg_softmax<MASK>(p, c, j, sc, m, l, alpha);
  fg_wg_wait<0>();
  fg_release(fg_bar_ve(c.bars, sp));
  if (rescale) fg_scale_o(o, alpha);
  fg_pack_p(sc, a);
}

} // namespace

// minBlocks 1: setmaxnreg needs the register cap that a launch bound gives.
// Persistent: the grid is at most one CTA per SM, each taking the work items
// of fg_tile_of.  The producer runs ahead across tiles (the K/V ring and,
// with two Q tiles, the next tile's Q are loaded while the consumers finish
// the current one).
extern "C" __global__ void __launch_bounds__({{ v.threads }}, 1)
{{ v.name }}(const fg_fwd_params p, const __grid_constant__ fg_tmaps tm) {
  extern __shared__ unsigned char fg_smem_raw[];
  __shared__ alignas(8) fg_u64 fg_bars[NBARS + (DYN ? 1 : 0)]; // DYN: the slots after them
  // The 128-byte swizzle repeats every 1024 bytes: tiles start on such a boundary.
  const fg_u32 sQ = (fg_smem_addr(fg_smem_raw) + 1023u) & ~1023u;
  const fg_u32 sK = sQ + QB * Q_BYTES;           // STAGES K tiles
  const fg_u32 sV = sK + STAGES * KV_BYTES;      // STAGES V tiles
  const fg_u32 sO = sV + STAGES * KV_BYTES;      // O (where O_SMEM)
  const fg_u32 bars = fg_smem_addr(fg_bars);
  const int wg = threadIdx.x / 128;
  const int items = fg_items(p);
  volatile int *const fg_slots = reinterpret_cast<volatile int *>(fg_bars + NBARS); // QB words, DYN

  if (threadIdx.x == 0) {
    for (int b = 0; b < QB; ++b) {
      fg_mbar_init(fg_bar_q(bars, b), 1);
      fg_mbar_init(fg_bar_qe(bars, b), 4 * NC); // one arrival per consumer warp
    }
    for (int s = 0; s < STAGES; ++s) {
      fg_mbar_init(fg_bar_k(bars, s), 1);
      fg_mbar_init(fg_bar_v(bars, s), 1);
      fg_mbar_init(fg_bar_ke(bars, s), 4 * NC);
      fg_mbar_init(fg_bar_ve(bars, s), 4 * NC);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    // Producer.  `it` counts K/V tiles and `kq` Q tiles over the whole
    // schedule: they give each buffer's stage and phase.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 {{ PRODUCER_REGS }};");
    if (threadIdx.x == 0) {
      int it = 0, kq = 0;
      for (int k = 0, item = DYN ? atomicAdd(p.sched, 1) : blockIdx.x; item < items;
           ++k, item = !DYN ? blockIdx.x + k / PER_ITEM * gridDim.x : k % PER_ITEM ? item : atomicAdd(p.sched, 1)) {
        const fg_tile T = fg_tile_of(p, item, k % PER_ITEM);
        if (DYN ? T.none : T.n_tiles == 0) continue;
        // Q tile kq % QB is free once the S products of the tile QB before
        // this one are done.
        const int qb = kq % QB;
        fg_mbar_wait(fg_bar_qe(bars, qb), ((kq / QB) & 1) ^ 1);
        ++kq;
        if (DYN) {
          fg_slots[qb] = item * PER_ITEM + k % PER_ITEM;
          if (T.n_tiles == 0) {
            fg_mbar_arrive(fg_bar_q(bars, qb)); // nothing to load: the slot alone
            continue;
          }
        }
        fg_mbar_expect(fg_bar_q(bars, qb), Q_BYTES);
        for (int sl = 0; sl < SL; ++sl)
          fg_tma_load(sQ + qb * Q_BYTES + sl * BQ * 128, tm.q, sl * 64, T.q_row0 + T.q0, T.h, T.tb, fg_bar_q(bars, qb));
        // K runs one tile ahead of V, in the order the consumers use them:
        // K(0), then K(i) and V(i - 1), then V(last).
        for (int i = 0; i <= T.n_tiles; ++i) {
          if (i < T.n_tiles) {
            const int j = T.n_tiles - 1 - i, s = (it + i) % STAGES;
            fg_mbar_wait(fg_bar_ke(bars, s), (((it + i) / STAGES) & 1) ^ 1);
            fg_mbar_expect(fg_bar_k(bars, s), KV_BYTES);
            for (int sl = 0; sl < SL; ++sl)
              fg_tma_load(sK + s * KV_BYTES + sl * BK * 128, tm.k, sl * 64, T.k_row0 + j * BK, T.hk, T.tb, fg_bar_k(bars, s));
          }
          if (i > 0) {
            const int j = T.n_tiles - i, s = (it + i - 1) % STAGES;
            fg_mbar_wait(fg_bar_ve(bars, s), (((it + i - 1) / STAGES) & 1) ^ 1);
            fg_mbar_expect(fg_bar_v(bars, s), KV_BYTES);
            for (int sl = 0; sl < SL; ++sl)
              fg_tma_load(sV + s * KV_BYTES + sl * BK * 128, tm.v, sl * 64, T.k_row0 + j * BK, T.hk, T.tb, fg_bar_v(bars, s));
          }
        }
        it += T.n_tiles;
      }
      if (DYN) { // the end, in the next Q buffer's slot
        const int qb = kq % QB;
        fg_mbar_wait(fg_bar_qe(bars, qb), ((kq / QB) & 1) ^ 1);
        fg_slots[qb] = -1;
        fg_mbar_arrive(fg_bar_q(bars, qb));
      }
    }
    return;
  }

  // Consumers.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 {{ CONSUMER_REGS }};");
  const int cw = wg - 1;                        // consumer index
  if (cw == NC - 1) fg_turn_pass(cw);           // consumer 0 takes the first turn
  const int warp = (threadIdx.x / 32) & 3, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int seq_q = p.seqlen_q, seq_k = p.seqlen_k, hd = p.head_dim;
  fg_cons c;
  c.sQ = sQ + cw * 64 * 128;
  c.sK = sK;
  c.sV = sV;
  c.bars = bars;
  c.g = g;
  c.t = t4;
  c.sk = seq_k;
  c.diag = seq_k - seq_q;
  int it = 0, kq = 0;
  for (int k = 0, item = DYN ? 0 : blockIdx.x; item < items; ++k, item = DYN ? 0 : blockIdx.x + k / PER_ITEM * gridDim.x) {
    int dyn_qb = 0, code = 0; // DYN: this tile's Q buffer and its slot's word
    if (DYN) {
      dyn_qb = kq % QB;
      fg_mbar_wait(fg_bar_q(bars, dyn_qb), (kq / QB) & 1);
      ++kq;
      code = fg_slots[dyn_qb];
      if (code < 0) break;
    }
    const fg_tile T = DYN ? fg_tile_of(p, code / PER_ITEM, code % PER_ITEM) : fg_tile_of(p, item, k % PER_ITEM);
    if (T.none) continue;
    if (DYN && T.n_tiles == 0) fg_release(fg_bar_qe(bars, dyn_qb)); // its Q buffer held nothing
    // (Without sequence lengths these are the call's, read once above.)
    const int len_q = VARLEN ? T.len_q : seq_q, sk = VARLEN ? T.len_k : seq_k;
    if (VARLEN) {
      c.sk = sk;
      c.diag = sk - len_q;
    }
    c.row0 = T.q0 + 64 * cw;
    c.wrow = c.row0 + 16 * warp;

    float o[NO][4];
    float m[2] = {FG_NEG_INF, FG_NEG_INF}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < NO; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] = 0.f;

    if (T.n_tiles > 0) {
      const int qb = DYN ? dyn_qb : kq % QB;
      c.sQ = sQ + qb * Q_BYTES + cw * 64 * 128;
      if (!DYN) { // (DYN waited above)
        fg_mbar_wait(fg_bar_q(bars, qb), (kq / QB) & 1);
        ++kq;
      }
      const int n_tiles = T.n_tiles;
      float sc[NS][4];
      fg_u32 a[BK / 16][4];
      // The first tile: S alone (always masked: that costs one tile's mask).
      fg_ring r = fg_ring_at(it);
      {
        const int s = r.s;
        fg_mbar_wait(fg_bar_k(bars, s), r.ph);
        fg_wg_fence();
        fg_issue_qk(c, sK + s * KV_BYTES, sc);
        fg_wg_commit();
        fg_wg_wait<0>();
        fg_release(fg_bar_ke(bars, s));
        float alpha[2];
        fg_softmax<true>(p, c, n_tiles - 1, sc, m, l, alpha); // O is still zero
        fg_pack_p(sc, a);
      }
      if (VARLEN && n_tiles * BK > sk) fg_zero_v_tail(c, r, sk - (n_tiles - 1) * BK);
      // Tiles at the sequence end or across this warpgroup's causal
      // diagonal need the mask; they come first.
      int i = 1;
      for (; i < n_tiles; ++i) {
        const int j = n_tiles - 1 - i;
        const bool needs_mask = (j + 1) * BK > sk || (CAUSAL && (j + 1) * BK - 1 > c.row0 + c.diag);
        if (!needs_mask) break;
        fg_ring_next(r);
        fg_step<true>(p, c, cw, j, r, sc, a, o, m, l);
      }
      for (; i < n_tiles; ++i) {
        fg_ring_next(r);
        fg_step<false>(p, c, cw, n_tiles - 1 - i, r, sc, a, o, m, l);
      }
      fg_release(fg_bar_qe(bars, qb)); // every product that reads this Q is complete
      // The last O += P V.
      {
        const int s = r.s; // the last step's K buffer holds its V too
        fg_mbar_wait(fg_bar_v(bars, s), r.ph);
        fg_wg_fence();
        fg_issue_pv(sV + s * KV_BYTES, a, o);
        fg_wg_commit();
        fg_wg_wait<0>();
        fg_release(fg_bar_ve(bars, s));
      }
      it += n_tiles;
    }

    // Epilogue: finish the row sums, normalize, and store O (the Q tile may
    // already hold the next tile's rows).
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      l[h2] += __shfl_xor_sync(0xffffffffu, l[h2], 1);
      l[h2] += __shfl_xor_sync(0xffffffffu, l[h2], 2);
    }
    if (O_SMEM) {
      // This warpgroup's 64 rows of the shared O tile: wait until the
      // previous tile's store has read them, fill them, make the writes
      // visible to the TMA unit, and one thread stores them.  (Named
      // barriers 4 + cw: 1..3 are the ping-pong's.)
      const bool leader = (threadIdx.x & 127) == 0;
      if (leader) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
      asm volatile("bar.sync %0, 128;" :: "r"(4 + cw) : "memory");
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        const int r = 64 * cw + 16 * warp + g + 8 * h2; // row within the tile
        const float inv = l[h2] > 0.f ? 1.f / l[h2] : 0.f;
#pragma unroll
        for (int n = 0; n < NO; ++n) {
          const int col = n * 8 + 2 * t4;
          const fg_u32 at = sO + (col >> 6) * BQ * 128 + r * 128 + ((((col & 63) >> 3) ^ (r & 7)) << 4) +
                            (col & 7) * 2;
          asm volatile("st.shared.u32 [%0], %1;" :: "r"(at), "r"(fg_pack(o[n][2 * h2] * inv, o[n][2 * h2 + 1] * inv))
                       : "memory");
        }
      }
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      asm volatile("bar.sync %0, 128;" :: "r"(4 + cw) : "memory");
      if (leader) {
        for (int sl = 0; sl < SL; ++sl)
          fg_tma_store(tm.o, sO + sl * BQ * 128 + 64 * cw * 128, sl * 64, c.row0, T.h, T.b);
        asm volatile("cp.async.bulk.commit_group;" ::: "memory");
      }
    }
    // With sequence lengths a packed sequence owns only its rows; a padded
    // one gets zeros up to seqlen_q (its padded rows computed scores over
    // whatever they held: selected away, not scaled).  LSE: -inf past len_q.
    const int o_rows = VARLEN && !T.packed ? p.seqlen_q : len_q;
    fg_u16 *og = (fg_u16 *)p.o + T.b * p.o_stride_b + (fg_i64)T.q_row0 * p.o_stride_s + T.h * p.o_stride_h;
#pragma unroll
    for (int h2 = 0; !O_SMEM && h2 < 2; ++h2) {
      const int row = c.wrow + g + 8 * h2;
      const float inv = l[h2] > 0.f ? 1.f / l[h2] : 0.f;
      if (row < o_rows) {
        const bool pad = VARLEN && row >= len_q;
        fg_u16 *orow = og + (fg_i64)row * p.o_stride_s + 2 * t4;
#pragma unroll
        for (int n = 0; n < NO; ++n)
          if (n * 8 + 2 * t4 < hd)
            *reinterpret_cast<fg_u32 *>(orow + n * 8) =
                pad ? 0u : fg_pack(o[n][2 * h2] * inv, o[n][2 * h2 + 1] * inv);
      }
    }
    if (p.lse && t4 == 0) {
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        const int row = c.wrow + g + 8 * h2;
        if (row < (VARLEN ? p.seqlen_q : len_q))
          p.lse[((fg_i64)T.b * p.heads_q + T.h) * p.seqlen_q + row] =
              l[h2] > 0.f && (!VARLEN || row < len_q) ? m[h2] * FG_LN2 + logf(l[h2]) : FG_NEG_INF;
      }
    }
  }
  // The shared O tile must stay until the last store has read it.
  if (O_SMEM && (threadIdx.x & 127) == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}
