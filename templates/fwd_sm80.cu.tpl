{#
  Forward attention on tensor cores (mma.sync m16n8k16, fp32 accumulation)
  for sm_80 and newer: the FlashAttention-2 scheme.

  A CTA takes block_q query rows of one (batch, head); warp w owns rows
  [16*MT*w, 16*MT*(w+1)) (MT = 1 or 2 row tiles of 16).  Q is loaded once; K and
  V tiles of block_kv keys stream through one shared buffer each:
      wait K(j) -> issue V(j) -> S = Q K(j)^T -> softmax ->
      wait V(j) -> issue K(j-1) -> O += P V(j)
  so each copy overlaps the other product.  Tiles are visited from the last to
  the first: the tiles that need a mask (sequence end, causal diagonal) come
  first; the others skip all mask work (a peeled copy of the tile body above
  head_dim 128, a warp-uniform branch below); tiles that
  causal masks completely are never visited.  The softmax runs in registers in
  the exp2 domain (scale folded with log2 e), rescales O only when a row max
  grows by more than 2^8, keeps per-thread partial row sums (reduced once at
  the end), and P becomes the A operand of PV without leaving registers.  Shared tiles are XOR-swizzled in 16-byte chunks so
  ldmatrix and the O write-back are free of bank conflicts.
#}
{% include("common.cuh.tpl") %}
{% include("fwd_params.cuh.tpl") %}
{% include("sm80_mma.cuh.tpl") %}
{%
  local D, BQ, BK, W = v.head_dim, v.block_q, v.block_kv, v.warps
  MT = BQ // (16 * W)
  assert(MT * 16 * W == BQ and (MT == 1 or MT == 2), "block_q must be 16 * warps * (1 or 2)")
  assert(BK % 16 == 0 and D % 32 == 0, "block_kv must be a multiple of 16, head_dim of 32")
  assert(v.stages == 1 or v.stages == 2, "stages must be 1 or 2")
  local smem = (BQ + 2 * v.stages * BK) * D * 2
  assert(smem == v.smem_bytes, "shared-memory layout disagrees with the generator's resource model")
  CH = D // 8
  SWIZZLE_GROUPS_OF_8 = CH % 8 == 0
  -- Peeling: masked tiles and interior tiles each get their own copy of the
  -- tile body (MASK 1 and 0) instead of one body with a warp-uniform mask
  -- branch (MASK 2).  Measured on an H100 (scripts/ab-templates.sh, bf16):
  -- peeling is 2-4% faster at head_dim 256 and for causal head_dim 128, equal
  -- for non-causal 128, and costs ~0.4 s more NVRTC time and more registers
  -- where they are tight (head_dim <= 128, 128-row tiles).  So peel above 128.
  PEEL = D > 128
%}

namespace {

constexpr int D = {{ v.head_dim }};       // compiled head dimension
constexpr int BQ = {{ v.block_q }};       // query rows per CTA
constexpr int BK = {{ v.block_kv }};      // keys per tile
constexpr int MT = {{ MT }};               // 16-row tiles per warp
constexpr int NS = BK / 8;                // n-tiles of S per row tile
constexpr int NO = D / 8;                 // n-tiles of O per row tile
constexpr int CH = D / 8;                 // 16-byte chunks per row
constexpr int FULL = (CH / 8) * 8;        // chunks in whole groups of eight
constexpr int THREADS = {{ v.threads }};
constexpr bool CAUSAL = {{ v.causal }};
constexpr int STAGES = {{ v.stages }};    // 1: one K and one V buffer, 2: a ring of two each
constexpr int TILE_BYTES = BK * D * 2;
constexpr float FG_RESCALE_SLACK = 8.f; // log2 units: P <= 256 between rescales
{% include("features.cuh.tpl") %}

// Byte offset of 16-byte chunk `chunk` of row `row` in a [rows][D] tile.  The
// chunk index is XORed with the row so that the 8 rows an ldmatrix phase
// reads land in 8 different bank groups.
__device__ __forceinline__ int fg_swz(int row, int chunk) {
{% if SWIZZLE_GROUPS_OF_8 then %}
  return row * (D * 2) + ((chunk ^ (row & 7)) << 4);
{% else %}
  // D is 32 mod 64: rows are 64 bytes mod 128, so the trailing group of four
  // chunks is swizzled with the row pair.
  const int phys = chunk < FULL ? (chunk ^ (row & 7)) : FULL + ((chunk - FULL) ^ ((row >> 1) & 3));
  return row * (D * 2) + (phys << 4);
{% end %}
}

// ldmatrix addresses as lane base + immediate.  The swizzle XORs only the low
// three bits of a chunk index, with bits of the row that a lane keeps fixed,
// so a k16 step k (chunks 2k, 2k+1) uses one of at most six per-lane bases:
// phase k%4 inside whole groups of eight chunks, 4 + k' in the trailing group
// of four.  Everything else (row tiles, whole groups) is an immediate, so the
// compiler holds 6 registers per operand instead of one per unrolled load.
constexpr int NFULLK = FULL / 2; // k16 steps inside whole groups of eight chunks
__device__ __forceinline__ constexpr int fg_ph(int k) { return k < NFULLK ? (k & 3) : 4 + (k - NFULLK); }
__device__ __forceinline__ constexpr int fg_imm(int k) { return k < NFULLK ? (k >> 2) * 128 : FULL * 16; }
// Offset within a row of phase ph for a lane whose chunk bit is x and whose row is r.
__device__ __forceinline__ int fg_lane_phase(int ph, int x, int r) {
  return ph < 4 ? 16 * ((2 * ph + x) ^ (r & 7)) : 16 * ((2 * (ph - 4) + x) ^ ((r >> 1) & 3));
}

// Copies rows [row0, row0 + ROWS) of a [seq][D] head (row stride `stride`
// elements) into a swizzled shared tile; rows past row_limit and columns past
// hd become zeros.  Eight threads take one row (128 contiguous bytes per
// pass); passes advance by a multiple of 8 rows, so each thread's swizzle is
// fixed and every shared address is base + immediate.
template <int ROWS>
__device__ __forceinline__ void fg_load_tile(fg_u32 tile, const fg_u16 *g, int row0, int row_limit,
                                             fg_i64 stride, int hd) {
  constexpr int RP = THREADS / 8; // rows per pass
  const int tr = threadIdx.x >> 3, tc = threadIdx.x & 7;
  const fg_u32 dst0 = tile + tr * (D * 2);
  const fg_u16 *src = g + (fg_i64)(row0 + tr) * stride;
  const fg_i64 step = (fg_i64)RP * stride;
  // Not unrolled: unrolled, each pass's 64-bit offset would be hoisted out of
  // the K/V loop and held in registers the accumulators need.
#pragma unroll 1
  for (int it = 0; it < (ROWS + RP - 1) / RP; ++it, src += step) {
    const int r = it * RP + tr;
    if (ROWS % RP == 0 || r < ROWS) {
      const bool row_ok = row0 + r < row_limit;
      const fg_u16 *rs = row_ok ? src : g;
      const fg_u32 dst = dst0 + it * RP * D * 2;
#pragma unroll
      for (int k = 0; k < FULL / 8; ++k) {
        const bool ok = row_ok && (8 * k + tc) * 8 < hd;
        fg_cp_async16(dst + 128 * k + 16 * (tc ^ (tr & 7)), rs + (ok ? (8 * k + tc) * 8 : 0), ok ? 16 : 0);
      }
      if (CH != FULL && tc < 4) { // the trailing group of four chunks
        const bool ok = row_ok && (FULL + tc) * 8 < hd;
        fg_cp_async16(dst + 16 * (FULL + (tc ^ ((tr >> 1) & 3))), rs + (ok ? (FULL + tc) * 8 : 0),
                      ok ? 16 : 0);
      }
    }
  }
}

struct alignas(16) fg_v4 {
  fg_u32 x, y, z, w;
};

// What one CTA knows about its rows and its K/V head.
struct fg_cta {
  fg_u32 sK, sV;          // shared tiles
  fg_u32 qa[6], ka[6], va[6]; // per-lane ldmatrix bases (see fg_ph)
  const fg_u16 *kg, *vg;  // this (batch, kv head)
  int q0, wrow, diag, hd;
  int lane, g, t;
  int sk;                 // keys of this sequence
  int jlo;                // the lowest tile visited
  int wl, wr;             // window extents (HAS_LEFT, HAS_RIGHT)
  float slope2;           // ALiBi slope, score units (fg_slope_u)
  fg_u32 bh;              // b * heads_q + h (dropout)
};

// One K/V tile: S = Q K(j)^T, the mask (MASK: never, always, or when
// `masked`, a warp-uniform branch so that interior tiles skip all mask work),
// the online softmax, O += P V(j).
// STAGES 1: V(j) is copied in behind S, K(j-1) behind PV (FlashAttention-2).
// STAGES 2: tile j sits in ring buffer `buf`; K and V of tile j-2 are copied
// into it once every warp is done, a whole tile ahead of their use.
template <int MASK> // 0: no mask, 1: mask, 2: mask when `masked`
__device__ __forceinline__ void fg_step(const fg_fwd_params &p, const fg_cta &c, int j, int buf, bool masked,
                                        float (&acc)[MT][NO][4], float (&m)[MT][2], float (&l)[MT][2]) {
  const fg_u32 sK = c.sK, sV = c.sV;
  const fg_u32 boff = STAGES == 2 ? buf * TILE_BYTES : 0;
  const int lane = c.lane, g = c.g, t = c.t, wrow = c.wrow, q0 = c.q0, diag = c.diag, hd = c.hd;
  const int sk = c.sk;
  if (STAGES == 1) {
    fg_cp_async_wait<0>();
    __syncthreads(); // K(j) has landed; every warp is done with V(j+1)
    fg_load_tile<BK>(sV, c.vg, j * BK, sk, p.v_stride_s, hd);
    fg_cp_async_commit();
  } else {
    fg_cp_async_wait<1>(); // all but the newest group (tile j-1): tile j has landed
    __syncthreads();
  }

  // S = Q K(j)^T
  float s[MT][NS][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int ns = 0; ns < NS; ++ns)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mt][ns][e] = 0.f;
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    fg_u32 a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      fg_ldsm_x4(c.qa[fg_ph(kd)] + fg_imm(kd) + mt * 16 * D * 2, a[mt][0], a[mt][1], a[mt][2], a[mt][3]);
#pragma unroll
    for (int ns2 = 0; ns2 < NS / 2; ++ns2) {
      fg_u32 b0, b1, b2, b3;
      fg_ldsm_x4(c.ka[fg_ph(kd)] + boff + fg_imm(kd) + ns2 * 16 * D * 2, b0, b1, b2, b3);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        fg_mma(s[mt][2 * ns2], a[mt], b0, b1);
        fg_mma(s[mt][2 * ns2 + 1], a[mt], b2, b3);
      }
    }
  }

  // Element (mt, ns, e) holds key j*BK + ns*8 + 2t + (e&1) of row
  // q0 + wrow + mt*16 + g + 8*(e>>1).
  const int kbase = j * BK + 2 * t;
  if (SOFTCAP) fg_softcap(p, s);
  if (ALIBI) {
    // slope * (key - row - diag) = ab + slope * (kc - row offset).
    const float ab = c.slope2 * (float)(kbase - (q0 + wrow + g + diag));
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ns = 0; ns < NS; ++ns)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          s[mt][ns][e] += fmaf(c.slope2, (float)(ns * 8 + (e & 1) - mt * 16 - 8 * (e >> 1)), ab);
  }
  if (MASK == 1 || (MASK == 2 && masked)) {
    // Each test becomes "compile-time constant vs one per-thread scalar", so
    // the mask costs a compare and a select per element and no live indices.
    const int klim = sk - kbase;                           // key < len_k
    const int dlim = q0 + wrow + g + diag + c.wr - kbase;  // key <= row + diag + right
    const int llim = q0 + wrow + g + diag - c.wl - kbase;  // key >= row + diag - left
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int ns = 0; ns < NS; ++ns)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kc = ns * 8 + (e & 1);
          bool visible = kc < klim;
          if (HAS_RIGHT) visible = visible && kc - mt * 16 - 8 * (e >> 1) <= dlim;
          if (HAS_LEFT) visible = visible && kc - mt * 16 - 8 * (e >> 1) >= llim;
          if (!visible) s[mt][ns][e] = FG_NEG_INF;
        }
  }
  // Softmax multiplier of the scores (scale * log2 e without features).
  const float sl2 = fg_score_unit(p);

  // Online softmax: rows g and g+8 of each row tile live in the 4 lanes of a
  // quad.  m holds each row's reference max in the exp2 domain.  It moves only
  // when some row of the warp has grown past it by more than FG_RESCALE_SLACK:
  // then every row takes its new max and O and l are rescaled; otherwise P
  // stays below 2^FG_RESCALE_SLACK, safe in fp32, bf16 and fp16, and the
  // rescale (one multiply per O accumulator, on the path to PV) is skipped.
  // O = acc / l and LSE = m ln2 + ln l hold for any reference max.
  float mx[MT][2];
  bool grow = false;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      float r = FG_NEG_INF;
#pragma unroll
      for (int ns = 0; ns < NS; ++ns) r = fmaxf(r, fmaxf(s[mt][ns][2 * h2], s[mt][ns][2 * h2 + 1]));
      r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, 1));
      r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, 2));
      mx[mt][h2] = r * sl2; // -inf stays -inf
      grow |= mx[mt][h2] > m[mt][h2] + FG_RESCALE_SLACK;
    }
  if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        const float m_new = fmaxf(m[mt][h2], mx[mt][h2]);
        // exp2(-inf) = 0 when the row had no visible key; 1 when it did not move.
        const float alpha = m_new == FG_NEG_INF ? 1.f : fg_ex2(m[mt][h2] - m_new);
        m[mt][h2] = m_new;
        l[mt][h2] *= alpha;
#pragma unroll
        for (int nd = 0; nd < NO; ++nd) {
          acc[mt][nd][2 * h2] *= alpha;
          acc[mt][nd][2 * h2 + 1] *= alpha;
        }
      }
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      // A row with no visible key yet keeps -inf: use 0 so that exp2 sees -inf, not NaN.
      const float m_use = m[mt][h2] == FG_NEG_INF ? 0.f : m[mt][h2];
      float rs = 0.f;
#pragma unroll
      for (int ns = 0; ns < NS; ++ns)
#pragma unroll
        for (int e = 2 * h2; e < 2 * h2 + 2; ++e) {
          s[mt][ns][e] = fg_ex2(fmaf(s[mt][ns][e], sl2, -m_use));
          rs += s[mt][ns][e];
        }
      l[mt][h2] += rs;
    }
  if (DROPOUT) {
    // Drop after the row sums (the LSE is the undropped one); the kept
    // values' scale is applied with the normalization at the end.
    const fg_u32 bh = c.bh;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2)
#pragma unroll
        for (int ch = 0; ch < NS / 4; ++ch) {
          fg_u32 r[4];
          fg_drop_words(p, bh, q0 + wrow + mt * 16 + g + 8 * h2, (j * BK) / 32 + ch, t, r);
#pragma unroll
          for (int n = 0; n < 4; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e)
              if (!fg_drop_keep(p, r, n, e)) s[mt][ch * 4 + n][2 * h2 + e] = 0.f;
        }
  }

  if (STAGES == 1) {
    fg_cp_async_wait<0>();
    __syncthreads(); // V(j) has landed; every warp is done with K(j)
    if (j > c.jlo) fg_load_tile<BK>(sK, c.kg, (j - 1) * BK, sk, p.k_stride_s, hd);
    fg_cp_async_commit();
  }

  // O += P V(j), P straight from the S registers.
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) {
    fg_u32 a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      a[mt][0] = fg_pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
      a[mt][1] = fg_pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
      a[mt][2] = fg_pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
      a[mt][3] = fg_pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int nd2 = 0; nd2 < NO / 2; ++nd2) {
      fg_u32 b0, b1, b2, b3;
      fg_ldsm_x4_trans(c.va[fg_ph(nd2)] + boff + fg_imm(nd2) + kk * 16 * D * 2, b0, b1, b2, b3);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        fg_mma(acc[mt][2 * nd2], a[mt], b0, b1);
        fg_mma(acc[mt][2 * nd2 + 1], a[mt], b2, b3);
      }
    }
  }
  if (STAGES == 2) {
    __syncthreads(); // every warp is done with ring buffer `buf`
    if (j - 2 >= c.jlo) {
      fg_load_tile<BK>(sK + boff, c.kg, (j - 2) * BK, sk, p.k_stride_s, hd);
      fg_load_tile<BK>(sV + boff, c.vg, (j - 2) * BK, sk, p.v_stride_s, hd);
    }
    fg_cp_async_commit(); // one group per tile, empty at the end
  }
}

} // namespace

// minBlocks 1: the register budget is the tile's, not an occupancy target.
extern "C" __global__ void __launch_bounds__({{ v.threads }}, 1)
{{ v.name }}(const fg_fwd_params p) {
  extern __shared__ __align__(128) unsigned char fg_smem[];
  const fg_u32 sQ = fg_smem_addr(fg_smem);
  const fg_u32 sK = sQ + BQ * D * 2;        // STAGES K tiles
  const fg_u32 sV = sK + STAGES * TILE_BYTES; // STAGES V tiles

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const fg_i64 bid = blockIdx.x;
  const fg_i64 bh = bid / p.q_blocks;
  // Causal: the longest rows (last q blocks) start first, so the short ones fill the tail.
  const int q_block = CAUSAL ? p.q_blocks - 1 - (int)(bid % p.q_blocks) : (int)(bid % p.q_blocks);
  const int h = (int)(bh % p.heads_q);
  const int b = (int)(bh / p.heads_q);
  const int hk = h / p.group;
  const int q0 = q_block * BQ;
  const int hd = p.head_dim;
  const fg_seq sq = fg_sequence(p, b); // rows of this batch entry (VARLEN: its own lengths)
  const fg_u16 *qg = (const fg_u16 *)p.q + b * p.q_stride_b + sq.q_row0 * p.q_stride_s + h * p.q_stride_h;
  const fg_u16 *kg = (const fg_u16 *)p.k + b * p.k_stride_b + sq.k_row0 * p.k_stride_s + hk * p.k_stride_h;
  const fg_u16 *vg = (const fg_u16 *)p.v + b * p.v_stride_b + sq.k_row0 * p.v_stride_s + hk * p.v_stride_h;
  fg_u16 *og = (fg_u16 *)p.o + b * p.o_stride_b + sq.q_row0 * p.o_stride_s + h * p.o_stride_h;
  const int wrow = warp * 16 * MT; // this warp's first row within the block
  const int len_q = sq.len_q, sk = sq.len_k;

  // Query i sees key j iff j < len_k, and j <= i + diag + wr (causal: wr =
  // 0), and j >= i + diag - wl (window): aligned bottom-right when
  // len_q != len_k.  Tiles outside every row's range are never visited.
  const int diag = sk - len_q;
  const int wr = WINDOW ? p.win_right : 0, wl = WINDOW ? p.win_left : 0;
  int kv_end = q0 < len_q ? sk : 0;
  if (HAS_RIGHT) kv_end = min(kv_end, min(q0 + BQ, len_q) - 1 + diag + wr + 1);
  const int kv_begin = HAS_LEFT ? max(0, q0 + diag - wl) : 0;
  const int n_tiles = kv_end > kv_begin ? (kv_end + BK - 1) / BK : 0;
  const int jlo = n_tiles > 0 ? kv_begin / BK : 0;

  float acc[MT][NO][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      m[mt][h2] = FG_NEG_INF;
      l[mt][h2] = 0.f;
    }
#pragma unroll
    for (int nd = 0; nd < NO; ++nd)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nd][e] = 0.f;
  }

  if (n_tiles > 0) {
    fg_load_tile<BQ>(sQ, qg, q0, len_q, p.q_stride_s, hd);
    fg_load_tile<BK>(sK, kg, (n_tiles - 1) * BK, sk, p.k_stride_s, hd);
    if (STAGES == 2) fg_load_tile<BK>(sV, vg, (n_tiles - 1) * BK, sk, p.v_stride_s, hd);
    fg_cp_async_commit();
    if (STAGES == 2) { // the second ring buffer: tile n-2 (an empty group when there is none)
      if (n_tiles - 2 >= jlo) {
        fg_load_tile<BK>(sK + TILE_BYTES, kg, (n_tiles - 2) * BK, sk, p.k_stride_s, hd);
        fg_load_tile<BK>(sV + TILE_BYTES, vg, (n_tiles - 2) * BK, sk, p.v_stride_s, hd);
      }
      fg_cp_async_commit();
    }
  }

  fg_cta cta;
  cta.sK = sK;
  cta.sV = sV;
#pragma unroll
  for (int ph = 0; ph < 6; ++ph) {
    // Q: lanes 0-15 rows 0-15 at chunk 2k, lanes 16-31 the same rows at 2k+1.
    cta.qa[ph] = sQ + (wrow + (lane & 15)) * D * 2 + fg_lane_phase(ph, lane >> 4, lane & 15);
    // K: lanes 0-7 and 16-23 keys 0-7 / 8-15 at chunk 2k, lanes 8-15, 24-31 at 2k+1.
    const int krow = (lane & 7) + ((lane >> 4) << 3);
    cta.ka[ph] = sK + krow * D * 2 + fg_lane_phase(ph, (lane >> 3) & 1, krow);
    // V (transposed): lanes 0-15 keys 0-15 at chunk 2k, lanes 16-31 at 2k+1.
    cta.va[ph] = sV + (lane & 15) * D * 2 + fg_lane_phase(ph, lane >> 4, lane & 15);
  }
  cta.kg = kg;
  cta.vg = vg;
  cta.q0 = q0;
  cta.wrow = wrow;
  cta.diag = diag;
  cta.hd = hd;
  cta.lane = lane;
  cta.g = g;
  cta.t = t;
  cta.sk = sk;
  cta.jlo = jlo;
  cta.wl = wl;
  cta.wr = wr;
  cta.slope2 = fg_slope_u(p, b, h);
  cta.bh = (fg_u32)(b * p.heads_q + h);
  // Tiles at the sequence end or across the right edge (causal diagonal,
  // window) need the mask and come first (tiles go from the last to the
  // first); with a window, so do the tiles across its left edge, last.
  // Tiles from jmid down need no left mask: their first key is at or after
  // the last row's first visible key.
  const int jmid = HAS_LEFT ? max(jlo, (min(q0 + BQ, len_q) - 1 + diag - wl + BK - 1) / BK) : jlo;
{% if PEEL then %}
  int j = n_tiles - 1;
  for (; j >= jlo; --j) {
    const bool needs_mask = (j + 1) * BK > sk || (HAS_RIGHT && (j + 1) * BK - 1 > q0 + diag + wr) || j < jmid;
    if (!needs_mask) break; // going downwards, no tile until the left edge needs one either
    fg_step<1>(p, cta, j, (n_tiles - 1 - j) & 1, true, acc, m, l);
  }
  for (; j >= jmid; --j) fg_step<0>(p, cta, j, (n_tiles - 1 - j) & 1, false, acc, m, l);
  for (; j >= jlo; --j) fg_step<1>(p, cta, j, (n_tiles - 1 - j) & 1, true, acc, m, l);
{% else %}
  for (int j = n_tiles - 1; j >= jlo; --j) {
    const bool needs_mask = (j + 1) * BK > sk || (HAS_RIGHT && (j + 1) * BK - 1 > q0 + diag + wr) || j < jmid;
    fg_step<2>(p, cta, j, (n_tiles - 1 - j) & 1, needs_mask, acc, m, l);
  }
{% end %}

  // Epilogue: finish the row sums, normalize once, write O through this warp's
  // own rows of the Q tile (no other warp reads them) with 16-byte stores.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      l[mt][h2] += __shfl_xor_sync(0xffffffffu, l[mt][h2], 1);
      l[mt][h2] += __shfl_xor_sync(0xffffffffu, l[mt][h2], 2);
    }
  fg_cp_async_wait<0>();
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      const int row = wrow + mt * 16 + g + 8 * h2;
      // Rows past the sequence's end (VARLEN padding) get zeros.
      float inv = l[mt][h2] > 0.f && (!VARLEN || q0 + row < len_q) ? 1.f / l[mt][h2] : 0.f;
      if (DROPOUT) inv *= p.drop_scale; // the kept values' scale
#pragma unroll
      for (int nd = 0; nd < NO; ++nd)
        *reinterpret_cast<fg_u32 *>(fg_smem + fg_swz(row, nd) + 4 * t) =
            fg_pack(acc[mt][nd][2 * h2] * inv, acc[mt][nd][2 * h2 + 1] * inv);
    }
  __syncwarp();
  // Packed sequences own only their rows; padded ones write zeros up to seqlen_q.
  const int o_rows = sq.packed ? len_q : p.seqlen_q;
#pragma unroll
  for (int it = 0; it < 16 * MT * CH / 32; ++it) {
    const int i = it * 32 + lane;
    const int r = i / CH, c = i % CH;
    const int row = q0 + wrow + r;
    if (row < o_rows && c * 8 < hd)
      *reinterpret_cast<fg_v4 *>(og + (fg_i64)row * p.o_stride_s + c * 8) =
          *reinterpret_cast<const fg_v4 *>(fg_smem + fg_swz(wrow + r, c));
  }
  if (p.lse && t == 0) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        const int row = q0 + wrow + mt * 16 + g + 8 * h2;
        if (row < p.seqlen_q)
          p.lse[((fg_i64)b * p.heads_q + h) * p.seqlen_q + row] =
              l[mt][h2] > 0.f && (!VARLEN || row < len_q) ? m[mt][h2] * FG_LN2 + logf(l[mt][h2]) : FG_NEG_INF;
      }
  }
}
