{#
  Backward attention on tensor cores (mma.sync m16n8k16, fp32 accumulation)
  for sm_80 and newer: the FlashAttention-2 scheme.  One module holds the
  kernels of one backward pass, launched in this order:

    NAME_pre   D = rowsum(dO * O) per query row (fp32, into the workspace); in
               the atomic mode it also zeroes the fp32 dQ accumulator.
    NAME       one CTA per (batch, kv head, block of block_kv keys).  K and V
               stay in shared memory; dK and dV accumulate in registers over
               every query block of every query head of the GQA group (so the
               group sum needs no atomics).  Per query block:
                 S = Q K^T, dP = dO V^T           (registers, warp tiles of [BQ][BK])
                 P = exp2(S scale log2e - LSE log2e), dS = P (dP - D)
                 P, dS -> shared memory (16-bit)
                 dV += P^T dO, dK += dS^T Q       (registers, warp tiles of [BK][D])
                 atomic mode: dQacc += dS K       (fp32 reductions into the workspace)
               Q and dO of the next block stream in (cp.async) behind this one's
               products when stages = 2.
    NAME_post  atomic mode: dQ = scale * dQacc, converted and written with
               the caller's strides.
    NAME_dq    deterministic mode (op bwddet) instead of the atomics: one CTA
               per (batch, head, 64 query rows) recomputes S and dP over the
               K/V blocks and accumulates dQ in registers, like the forward.
               Nothing is reduced in an unordered way, so gradients are
               bitwise reproducible; S and dP are computed twice (7 instead of
               5 products, about 1.4x the work).

  Shared tiles are XOR-swizzled in 16-byte chunks (as in the forward) so that
  ldmatrix, plain and transposed, is free of bank conflicts.
#}
{% include("common.cuh.tpl") %}
{% include("bwd_params.cuh.tpl") %}
{% include("sm80_mma.cuh.tpl") %}
{%
  local D, BQ, BK, W = v.head_dim, v.block_q, v.block_kv, v.warps
  assert(D % 32 == 0 and BQ % 16 == 0 and BK % 32 == 0, "tile sizes")
  assert(v.stages == 1 or v.stages == 2, "stages must be 1 or 2")
  local smem = 2 * BK * D * 2 + 2 * v.stages * BQ * D * 2 + 2 * BQ * BK * 2 + 2 * v.stages * BQ * 4
  assert(smem == v.smem_bytes, "shared-memory layout disagrees with the generator's resource model")
%}

namespace {

constexpr int D = {{ v.head_dim }};      // compiled head dimension
constexpr int BQ = {{ v.block_q }};      // query rows per step of the main loop
constexpr int BK = {{ v.block_kv }};     // keys per CTA of the main kernel
constexpr int W = {{ v.warps }};
constexpr int THREADS = {{ v.threads }};
constexpr bool CAUSAL = {{ v.causal }};
constexpr bool DET = {{ v.op == "bwddet" }};
constexpr int STAGES = {{ v.stages }};   // buffers for Q and dO
constexpr int CH = D / 8;                // 16-byte chunks per row of a [rows][D] tile
constexpr int PCH = BK / 8;              // ... of a [BQ][BK] tile (P, dS)
constexpr bool SM90 = {{ v.arch >= 90 }};
{% include("features.cuh.tpl") %}

// Warp layouts (warps along M x along N) of the three kinds of product,
// chosen by the generator (gen/fg_variant.c, fg_bwd_layout).
constexpr int S_WM = {{ v.bwd_s_wm }}, S_WN = W / S_WM;    // S, dP: [BQ][BK]
constexpr int KV_WM = {{ v.bwd_kv_wm }}, KV_WN = W / KV_WM; // dK, dV: [BK][D]
constexpr int Q_WM = {{ v.bwd_q_wm }}, Q_WN = W / Q_WM;     // dQ: [BQ][D]
constexpr int S_MT = BQ / 16 / S_WM, S_NT = BK / 8 / S_WN;
constexpr int KV_MT = BK / 16 / KV_WM, KV_NT = D / 8 / KV_WN;
constexpr int Q_MT = BQ / 16 / Q_WM, Q_NT = D / 8 / Q_WN;
static_assert(S_MT * 16 * S_WM == BQ && S_NT * 8 * S_WN == BK && S_NT % 2 == 0, "S layout");
static_assert(KV_MT * 16 * KV_WM == BK && KV_NT * 8 * KV_WN == D && KV_NT % 2 == 0, "dK/dV layout");
static_assert(Q_MT * 16 * Q_WM == BQ && Q_NT * 8 * Q_WN == D && Q_NT % 2 == 0, "dQ layout");

// The deterministic dQ kernel: 4 warps of 16 rows, K/V tiles of DQ_BK keys.
constexpr int DQ_BQ = 64, DQ_THREADS = 128;
constexpr int DQ_BK = D <= 128 ? 64 : 32;
constexpr int DQ_STAGES = {{ v.bwd_dq_stages }};

constexpr int PRE_THREADS = {{ v.bwd_aux_threads }}; // the pre and post kernels

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of NCH chunks per
// row.  Whole groups of eight chunks are XORed with row % 8; a trailing group
// of four (rows of 32 mod 64 elements) with (row / 2) % 4, so that the eight
// rows one ldmatrix phase reads always fall in eight different bank groups.
template <int NCH>
__device__ __forceinline__ int fg_swz(int row, int chunk) {
  constexpr int FULL = (NCH / 8) * 8;
  const int phys = chunk < FULL ? (chunk ^ (row & 7)) : FULL + ((chunk - FULL) ^ ((row >> 1) & 3));
  return row * (NCH * 16) + (phys << 4);
}

// ldmatrix addressing.  A lane of an x4 ldmatrix gives one row address of a
// 16x16 block in one of two patterns:
//   pattern 0: row l % 16,                 chunk bit l / 16
//   pattern 1: row l % 8 + 8 (l / 16),     chunk bit (l / 8) % 2
// A [m][k] tile is read (A operand) with pattern 0, a [n][k] tile (B operand)
// with pattern 1; a transposed read ([k][m] for A, [k][n] for B) swaps them.
// Blocks start at rows that are multiples of 16 and at even chunks 2j, so the
// swizzle only ever XORs lane-constant bits: chunk 2j + bit lands at
// 8 (j / 4) + ((2 (j % 4) + bit) ^ (row % 8)) inside whole groups of eight,
// and in a trailing group of four at FULL + ((2 j' + bit) ^ ((row / 2) % 4)).
// So each (row width, pattern) needs at most six per-lane offsets (phases),
// computed once; every other part of an address is an immediate.  (Computing
// addresses inside the loop instead lets the compiler hoist one register per
// unrolled load.)
template <int NCH>
struct fg_offs {
  static constexpr int FULLJ = (NCH / 8) * 4; // chunk pairs in whole groups of eight
  int o[6];
  __device__ __forceinline__ void init(int pattern, int lane) {
    const int row = pattern == 0 ? (lane & 15) : (lane & 7) + ((lane >> 4) << 3);
    const int bit = pattern == 0 ? (lane >> 4) : ((lane >> 3) & 1);
#pragma unroll
    for (int ph = 0; ph < 6; ++ph) {
      const int c = ph < 4 ? (((2 * ph + bit) ^ (row & 7)) & 7) : (NCH / 8) * 8 + ((2 * (ph - 4) + bit) ^ ((row >> 1) & 3));
      o[ph] = row * (NCH * 16) + 16 * c;
    }
  }
  // Byte offset of the block at row r0 (a multiple of 16) and chunk pair j.
  __device__ __forceinline__ int at(int r0, int j) const {
    return j < FULLJ ? o[j & 3] + r0 * (NCH * 16) + 128 * (j >> 2) : o[4 + j - FULLJ] + r0 * (NCH * 16);
  }
};

// The four kinds of offsets the products use: rows of D chunks or of BK/8
// chunks (P, dS), each in both patterns.
struct fg_lanes {
  fg_offs<CH> d0, d1;
  fg_offs<PCH> p0, p1;
  __device__ __forceinline__ void init(int lane) {
    d0.init(0, lane);
    d1.init(1, lane);
    p0.init(0, lane);
    p1.init(1, lane);
  }
};

// Fragments of a 16x16 block.  A: a[0..3] of mma's A operand for rows m0.. and
// k0..; B: b[0], b[1] for n-tile n0..n0+7, b[2], b[3] for n0+8..n0+15.
// OA/OB: the offsets of the operand's tile width, in the pattern of its read.
// acc[MT][NT] += A[m0 : m0 + 16 MT][0 : K] * B[0 : K][n0 : n0 + 8 NT], both
// operands in shared memory; AT/BT: stored transposed ([k][m], [k][n]).
template <int MT, int NT, int K, bool AT, bool BT, class OA, class OB>
__device__ __forceinline__ void fg_gemm(float (&acc)[MT][NT][4], fg_u32 sa, const OA &oa, int m0,
                                        fg_u32 sb, const OB &ob, int n0) {
#pragma unroll
  for (int k = 0; k < K / 16; ++k) {
    fg_u32 a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if (AT)
        fg_ldsm_x4_trans(sa + oa.at(16 * k, (m0 + 16 * mt) / 16), a[mt][0], a[mt][1], a[mt][2], a[mt][3]);
      else
        fg_ldsm_x4(sa + oa.at(m0 + 16 * mt, k), a[mt][0], a[mt][1], a[mt][2], a[mt][3]);
    }
#pragma unroll
    for (int n2 = 0; n2 < NT / 2; ++n2) {
      fg_u32 b[4];
      if (BT)
        fg_ldsm_x4_trans(sb + ob.at(16 * k, (n0 + 16 * n2) / 16), b[0], b[1], b[2], b[3]);
      else
        fg_ldsm_x4(sb + ob.at(n0 + 16 * n2, k), b[0], b[1], b[2], b[3]);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        fg_mma(acc[mt][2 * n2], a[mt], b[0], b[1]);
        fg_mma(acc[mt][2 * n2 + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

template <int MT, int NT>
__device__ __forceinline__ void fg_zero(float (&acc)[MT][NT][4]) {
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
}

// Copies rows [row0, row0 + ROWS) of a [seq][D] head into a swizzled [ROWS][D]
// tile with NTHREADS threads; rows past row_limit and columns past hd become
// zeros.  Eight threads take one row.
template <int ROWS, int NTHREADS>
__device__ __forceinline__ void fg_load_tile(fg_u32 tile, const fg_u16 *g, int row0, int row_limit,
                                             fg_i64 stride, int hd) {
  constexpr int RP = NTHREADS / 8;
  const int tr = threadIdx.x >> 3, tc = threadIdx.x & 7;
#pragma unroll 1
  for (int r = tr; r < ROWS; r += RP) {
    const bool row_ok = row0 + r < row_limit;
    const fg_u16 *rs = row_ok ? g + (fg_i64)(row0 + r) * stride : g;
#pragma unroll
    for (int c = tc; c < CH; c += 8) {
      const bool ok = row_ok && c * 8 < hd;
      fg_cp_async16(tile + fg_swz<CH>(r, c), rs + (ok ? c * 8 : 0), ok ? 16 : 0);
    }
  }
}

// Writes a [rows][D] swizzled tile (16-bit) to global rows row0.. (row stride
// `stride`), rows below row_limit and columns below hd only.
template <int ROWS, int NTHREADS>
__device__ __forceinline__ void fg_store_tile(const unsigned char *tile, fg_u16 *g, int row0, int row_limit,
                                              fg_i64 stride, int hd) {
  struct alignas(16) v4 {
    fg_u32 x, y, z, w;
  };
#pragma unroll 1
  for (int i = threadIdx.x; i < ROWS * CH; i += NTHREADS) {
    const int r = i / CH, c = i % CH;
    if (row0 + r < row_limit && c * 8 < hd)
      *reinterpret_cast<v4 *>(g + (fg_i64)(row0 + r) * stride + c * 8) =
          *reinterpret_cast<const v4 *>(tile + fg_swz<CH>(r, c));
  }
}

// 4-byte global -> shared copy of one row's LSE or D; rows past the end get
// `fill` (written directly).
__device__ __forceinline__ void fg_load_row_stat(float *dst, const float *src, bool ok, float fill) {
  if (ok)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(fg_smem_addr(dst)), "l"(src) : "memory");
  else
    *dst = fill;
}

} // namespace

{% include("bwd_aux.cuh.tpl") %}

// ---- dK, dV (and, atomic mode, dQ) ----------------------------------------
extern "C" __global__ void __launch_bounds__({{ v.threads }}, 1)
{{ v.name }}(const fg_bwd_params p) {
  extern __shared__ __align__(128) unsigned char fg_smem[];
  const fg_u32 sK = fg_smem_addr(fg_smem);
  const fg_u32 sV = sK + BK * D * 2;
  const fg_u32 sQ = sV + BK * D * 2;         // STAGES buffers
  const fg_u32 sdO = sQ + STAGES * BQ * D * 2; // STAGES buffers
  const fg_u32 sP = sdO + STAGES * BQ * D * 2;
  const fg_u32 sdS = sP + BQ * BK * 2;
  // STAGES rows of LSE and of D, beside Q and dO.
  float *sL = reinterpret_cast<float *>(fg_smem + 2 * BK * D * 2 + 2 * STAGES * BQ * D * 2 + 2 * BQ * BK * 2);
  float *sDs = sL + STAGES * BQ;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const fg_i64 bid = blockIdx.x;
  const int n_block = (int)(bid % p.kv_blocks);
  const fg_i64 bhk = bid / p.kv_blocks;
  const int hk = (int)(bhk % p.heads_kv), b = (int)(bhk / p.heads_kv);
  const int k0 = n_block * BK;
  const int hd = p.head_dim;
  const fg_seq sq = fg_sequence(p, b); // rows of this batch entry (VARLEN: its own lengths)
  const int len_q = sq.len_q, sk = sq.len_k;
  const fg_u16 *kg = (const fg_u16 *)p.k + b * p.k_stride_b + sq.k_row0 * p.k_stride_s + hk * p.k_stride_h;
  const fg_u16 *vg = (const fg_u16 *)p.v + b * p.v_stride_b + sq.k_row0 * p.v_stride_s + hk * p.v_stride_h;

  // Query i sees key j iff j < len_k, j <= i + diag + wr (causal: wr = 0) and
  // (window) j >= i + diag - wl.  Query blocks that see none of this
  // block's keys are skipped.
  const int diag = sk - len_q;
  const int wr = WINDOW ? p.win_right : 0, wl = WINDOW ? p.win_left : 0;
  const int m_begin = HAS_RIGHT ? max(0, k0 - diag - wr) / BQ : 0;
  int m_end = p.q_blocks; // without VARLEN every CTA has keys (k0 < seqlen_k)
  if (VARLEN) m_end = k0 < sk ? (len_q + BQ - 1) / BQ : 0;
  // (Written so that plain variants compute exactly n_m = q_blocks - m_begin:
  // a general form here cost the head_dim 64 kernel 40 bytes of spills.)
  if (HAS_LEFT) m_end = min(m_end, max(0, min(k0 + BK, sk) - 1 - diag + wl + BQ) / BQ);
  const int n_m = max(0, m_end - m_begin);
  const int total = n_m * p.group; // (head of the group, query block) steps

  // Warp tiles.
  const int s_m0 = (warp % S_WM) * S_MT * 16, s_n0 = (warp / S_WM) * S_NT * 8;
  const int kv_m0 = (warp % KV_WM) * KV_MT * 16, kv_n0 = (warp / KV_WM) * KV_NT * 8;
  const int q_m0 = (warp % Q_WM) * Q_MT * 16, q_n0 = (warp / Q_WM) * Q_NT * 8;
  fg_lanes ln;
  ln.init(lane);

  auto issue_q = [&](int it, int buf) {
    const int h = hk * p.group + it / n_m, m = m_begin + it % n_m;
    const fg_u16 *qg = (const fg_u16 *)p.q + b * p.q_stride_b + sq.q_row0 * p.q_stride_s + h * p.q_stride_h;
    const fg_u16 *dg = (const fg_u16 *)p.dout + b * p.do_stride_b + sq.q_row0 * p.do_stride_s + h * p.do_stride_h;
    fg_load_tile<BQ, THREADS>(sQ + buf * BQ * D * 2, qg, m * BQ, len_q, p.q_stride_s, hd);
    fg_load_tile<BQ, THREADS>(sdO + buf * BQ * D * 2, dg, m * BQ, len_q, p.do_stride_s, hd);
    const fg_i64 rbase = ((fg_i64)b * p.heads_q + h) * p.seqlen_q;
    for (int r = threadIdx.x; r < BQ; r += THREADS) {
      const int row = m * BQ + r;
      const bool ok = row < len_q;
      fg_load_row_stat(sL + buf * BQ + r, p.lse + rbase + (ok ? row : 0), ok, __int_as_float(0x7f800000));
      fg_load_row_stat(sDs + buf * BQ + r, p.dsum + rbase + (ok ? row : 0), ok, 0.f);
    }
  };

  float dk[KV_MT][KV_NT][4], dv[KV_MT][KV_NT][4];
  fg_zero(dk);
  fg_zero(dv);

  if (total > 0) {
    fg_load_tile<BK, THREADS>(sK, kg, k0, sk, p.k_stride_s, hd);
    fg_load_tile<BK, THREADS>(sV, vg, k0, sk, p.v_stride_s, hd);
    issue_q(0, 0);
    fg_cp_async_commit();
  }

#pragma unroll 1
  for (int it = 0; it < total; ++it) {
    const int h = hk * p.group + it / n_m, m = m_begin + it % n_m;
    const fg_i64 bh = (fg_i64)b * p.heads_q + h;
    const int q0 = m * BQ;
    const int buf = STAGES == 2 ? (it & 1) : 0;
    const fg_u32 q_s = sQ + buf * BQ * D * 2, do_s = sdO + buf * BQ * D * 2;

    fg_cp_async_wait<0>();
    __syncthreads(); // Q(it), dO(it) have landed; step it-1 is done with every buffer
    if (STAGES == 2 && it + 1 < total) {
      issue_q(it + 1, buf ^ 1);
      fg_cp_async_commit();
    }

    float s[S_MT][S_NT][4], dp[S_MT][S_NT][4];
    fg_zero(s);
    fg_gemm<S_MT, S_NT, D, false, false>(s, q_s, ln.d0, s_m0, sK, ln.d1, s_n0);
    fg_zero(dp);
    fg_gemm<S_MT, S_NT, D, false, false>(dp, do_s, ln.d0, s_m0, sV, ln.d1, s_n0);

    // This thread's rows of S: s_m0 + mt*16 + g + 8*h2; their LSE and D came
    // in with Q and dO.
    float lse2[S_MT][2], drow[S_MT][2];
#pragma unroll
    for (int mt = 0; mt < S_MT; ++mt)
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        const int r = s_m0 + mt * 16 + g + 8 * h2;
        lse2[mt][h2] = fg_lse2(sL[buf * BQ + r]);
        drow[mt][h2] = sDs[buf * BQ + r];
      }

    // Element (mt, ns, e) is row q0 + s_m0 + mt*16 + g + 8*(e>>1), key
    // k0 + s_n0 + ns*8 + 2t + (e&1).
    const bool masked = k0 + BK > sk || (HAS_RIGHT && k0 + BK - 1 > q0 + diag + wr) ||
                        (HAS_LEFT && k0 < q0 + BQ - 1 + diag - wl);
    const int kbase = k0 + s_n0 + 2 * t;
    const int klim = sk - kbase;
    const int dlim = q0 + s_m0 + g + diag + wr - kbase;
    const int llim = q0 + s_m0 + g + diag - wl - kbase;
    const float sl2 = fg_slope_u(p, b, h);
    const float ab = sl2 * (float)(kbase - (q0 + s_m0 + g + diag)); // ALiBi (as the forward)
    if (SOFTCAP) fg_softcap(p, s); // s becomes t = tanh(scale q.k / cap)
    // Dropout: chunks of 32 keys hold this warp's keys (one whole chunk per 4
    // n-tiles, or part of one when S_NT is 2: then the n-tile within the
    // chunk depends on the warp).
    constexpr int DCH = DROPOUT ? (S_NT + 3) / 4 : 1;
    const int dn0 = S_NT >= 4 ? 0 : (s_n0 >> 3) & 3;
#pragma unroll
    for (int mt = 0; mt < S_MT; ++mt)
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        fg_u32 rw[DCH][4];
        if (DROPOUT) {
#pragma unroll
          for (int ch = 0; ch < DCH; ++ch)
            fg_drop_words(p, (fg_u32)bh, q0 + s_m0 + mt * 16 + g + 8 * h2, (k0 + s_n0) / 32 + ch, t, rw[ch]);
        }
#pragma unroll
        for (int ns = 0; ns < S_NT; ++ns)
#pragma unroll
          for (int e = 2 * h2; e < 2 * h2 + 2; ++e) {
            const int kc = ns * 8 + (e & 1);
            // dscore: d(score) / d(scale q.k), the softcap's 1 - t^2.
            const float dscore = SOFTCAP ? fmaf(-s[mt][ns][e], s[mt][ns][e], 1.f) : 1.f;
            float x = s[mt][ns][e];
            if (ALIBI) x += fmaf(sl2, (float)(kc - mt * 16 - 8 * h2), ab);
            float pv = fg_ex2(fmaf(x, fg_score_unit(p), -lse2[mt][h2]));
            if (masked) {
              bool visible = kc < klim;
              if (HAS_RIGHT) visible = visible && kc - mt * 16 - 8 * h2 <= dlim;
              if (HAS_LEFT) visible = visible && kc - mt * 16 - 8 * h2 >= llim;
              if (!visible) pv = 0.f;
            }
            float dpv = dp[mt][ns][e], pdrop = pv;
            if (DROPOUT) { // dV takes the dropped P; dP = dO V^T through the same mask
              const float f = fg_drop_keep(p, rw[ns / 4], dn0 + (ns & 3), e & 1) ? p.drop_scale : 0.f;
              pdrop = pv * f;
              dpv *= f;
            }
            s[mt][ns][e] = pdrop;
            dp[mt][ns][e] = pv * (dpv - drow[mt][h2]) * dscore;
          }
      }

    // P and dS to shared memory, [BQ][BK].
#pragma unroll
    for (int mt = 0; mt < S_MT; ++mt)
#pragma unroll
      for (int ns = 0; ns < S_NT; ++ns)
#pragma unroll
        for (int h2 = 0; h2 < 2; ++h2) {
          const int row = s_m0 + mt * 16 + g + 8 * h2, col = s_n0 + ns * 8;
          const int off = fg_swz<PCH>(row, col >> 3) + 4 * t;
          *reinterpret_cast<fg_u32 *>(fg_smem + (sP - sK) + off) = fg_pack(s[mt][ns][2 * h2], s[mt][ns][2 * h2 + 1]);
          *reinterpret_cast<fg_u32 *>(fg_smem + (sdS - sK) + off) = fg_pack(dp[mt][ns][2 * h2], dp[mt][ns][2 * h2 + 1]);
        }
    __syncthreads();

    fg_gemm<KV_MT, KV_NT, BQ, true, true>(dv, sP, ln.p1, kv_m0, do_s, ln.d0, kv_n0);
    fg_gemm<KV_MT, KV_NT, BQ, true, true>(dk, sdS, ln.p1, kv_m0, q_s, ln.d0, kv_n0);

    if (STAGES == 1 && it + 1 < total) {
      __syncthreads(); // every warp is done with Q(it), dO(it)
      issue_q(it + 1, 0);
      fg_cp_async_commit();
    }

    if (!DET) {
      float dq[Q_MT][Q_NT][4];
      fg_zero(dq);
      fg_gemm<Q_MT, Q_NT, BK, false, true>(dq, sdS, ln.p0, q_m0, sK, ln.d0, q_n0);
      float *acc = p.dq_acc + bh * p.seqlen_q * D;
#pragma unroll
      for (int mt = 0; mt < Q_MT; ++mt)
#pragma unroll
        for (int h2 = 0; h2 < 2; ++h2) {
          const int row = q0 + q_m0 + mt * 16 + g + 8 * h2;
          if (row < len_q) {
#pragma unroll
            for (int nt = 0; nt < Q_NT; ++nt)
              fg_red2(acc + (fg_i64)row * D + q_n0 + nt * 8 + 2 * t, dq[mt][nt][2 * h2], dq[mt][nt][2 * h2 + 1]);
          }
        }
    }
  }

  // Epilogue: dK (scaled) and dV through shared memory (the K and V tiles) to
  // global memory.  Keys no query sees get zeros.
  fg_cp_async_wait<0>();
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < KV_MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < KV_NT; ++nt)
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {
        const int row = kv_m0 + mt * 16 + g + 8 * h2, col = kv_n0 + nt * 8;
        const int off = fg_swz<CH>(row, col >> 3) + 4 * t;
        *reinterpret_cast<fg_u32 *>(fg_smem + off) =
            fg_pack(dk[mt][nt][2 * h2] * p.scale, dk[mt][nt][2 * h2 + 1] * p.scale);
        *reinterpret_cast<fg_u32 *>(fg_smem + BK * D * 2 + off) =
            fg_pack(dv[mt][nt][2 * h2], dv[mt][nt][2 * h2 + 1]);
      }
  __syncthreads();
  // Packed sequences own only their rows; padded keys get zeros up to seqlen_k.
  const int k_rows = sq.packed ? sk : p.seqlen_k;
  fg_store_tile<BK, THREADS>(fg_smem, (fg_u16 *)p.dk + b * p.dk_stride_b + sq.k_row0 * p.dk_stride_s + hk * p.dk_stride_h,
                             k0, k_rows, p.dk_stride_s, hd);
  fg_store_tile<BK, THREADS>(fg_smem + BK * D * 2,
                             (fg_u16 *)p.dv + b * p.dv_stride_b + sq.k_row0 * p.dv_stride_s + hk * p.dv_stride_h,
                             k0, k_rows, p.dv_stride_s, hd);
}

{% if v.op == "bwddet" then %}
// ---- deterministic dQ: one CTA per 64 query rows ----------------------------
// Warp w owns rows 16w..16w+15; the K/V tiles stream through DQ_STAGES
// buffers.  dS stays in registers and is the A operand of dQ += dS K.
extern "C" __global__ void __launch_bounds__(128, 1)
{{ v.name }}_dq(const fg_bwd_params p) {
  extern __shared__ __align__(128) unsigned char fg_smem[];
  constexpr int TILE = DQ_BK * D * 2;
  const fg_u32 sQ = fg_smem_addr(fg_smem);
  const fg_u32 sdO = sQ + DQ_BQ * D * 2;
  const fg_u32 sK = sdO + DQ_BQ * D * 2; // DQ_STAGES tiles
  const fg_u32 sV = sK + DQ_STAGES * TILE;
  constexpr int NS = DQ_BK / 8, NO = D / 8;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int q_blocks = (p.seqlen_q + DQ_BQ - 1) / DQ_BQ;
  const fg_i64 bid = blockIdx.x;
  const int qb = (int)(bid % q_blocks);
  const fg_i64 bh = bid / q_blocks;
  const int h = (int)(bh % p.heads_q), b = (int)(bh / p.heads_q);
  const int hk = h / p.group;
  const int q0 = qb * DQ_BQ, hd = p.head_dim;
  const fg_seq sq = fg_sequence(p, b);
  const int len_q = sq.len_q, sk = sq.len_k;
  const int diag = sk - len_q;
  const fg_u16 *kg = (const fg_u16 *)p.k + b * p.k_stride_b + sq.k_row0 * p.k_stride_s + hk * p.k_stride_h;
  const fg_u16 *vg = (const fg_u16 *)p.v + b * p.v_stride_b + sq.k_row0 * p.v_stride_s + hk * p.v_stride_h;
  const fg_u16 *qg = (const fg_u16 *)p.q + b * p.q_stride_b + sq.q_row0 * p.q_stride_s + h * p.q_stride_h;
  const fg_u16 *dg = (const fg_u16 *)p.dout + b * p.do_stride_b + sq.q_row0 * p.do_stride_s + h * p.do_stride_h;
  // The K/V tiles some row of this block sees (as in the forward).
  const int wr = WINDOW ? p.win_right : 0, wl = WINDOW ? p.win_left : 0;
  int kv_end = q0 < len_q ? sk : 0;
  if (HAS_RIGHT) kv_end = min(kv_end, min(q0 + DQ_BQ, len_q) - 1 + diag + wr + 1);
  const int kv_begin = HAS_LEFT ? max(0, q0 + diag - wl) : 0;
  const int jlo = kv_begin / DQ_BK;
  const int n_tiles = kv_end > kv_begin ? (kv_end + DQ_BK - 1) / DQ_BK : 0;

  const int wrow = warp * 16;
  fg_offs<CH> d0, d1;
  d0.init(0, lane);
  d1.init(1, lane);
  float lse2[2], drow[2];
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    const int row = q0 + wrow + g + 8 * h2;
    lse2[h2] = row < len_q ? fg_lse2(p.lse[bh * p.seqlen_q + row]) : __int_as_float(0x7f800000);
    drow[h2] = row < len_q ? p.dsum[bh * p.seqlen_q + row] : 0.f;
  }
  float acc[1][NO][4];
  fg_zero(acc);

  const float sl2 = fg_slope_u(p, b, h);
  if (n_tiles > 0) {
    fg_load_tile<DQ_BQ, 128>(sQ, qg, q0, len_q, p.q_stride_s, hd);
    fg_load_tile<DQ_BQ, 128>(sdO, dg, q0, len_q, p.do_stride_s, hd);
    fg_load_tile<DQ_BK, 128>(sK, kg, jlo * DQ_BK, sk, p.k_stride_s, hd);
    fg_load_tile<DQ_BK, 128>(sV, vg, jlo * DQ_BK, sk, p.v_stride_s, hd);
    fg_cp_async_commit();
  }
#pragma unroll 1
  for (int j = jlo; j < n_tiles; ++j) {
    const int buf = DQ_STAGES == 2 ? ((j - jlo) & 1) : 0;
    const fg_u32 k_s = sK + buf * TILE, v_s = sV + buf * TILE;
    fg_cp_async_wait<0>();
    __syncthreads(); // tile j has landed; every warp is done with tile j-1
    if (DQ_STAGES == 2 && j + 1 < n_tiles) {
      fg_load_tile<DQ_BK, 128>(sK + (buf ^ 1) * TILE, kg, (j + 1) * DQ_BK, sk, p.k_stride_s, hd);
      fg_load_tile<DQ_BK, 128>(sV + (buf ^ 1) * TILE, vg, (j + 1) * DQ_BK, sk, p.v_stride_s, hd);
      fg_cp_async_commit();
    }
    float s[1][NS][4], dp[1][NS][4];
    fg_zero(s);
    fg_gemm<1, NS, D, false, false>(s, sQ, d0, wrow, k_s, d1, 0);
    fg_zero(dp);
    fg_gemm<1, NS, D, false, false>(dp, sdO, d0, wrow, v_s, d1, 0);
    const int kbase = j * DQ_BK + 2 * t;
    const bool masked = (j + 1) * DQ_BK > sk || (HAS_RIGHT && (j + 1) * DQ_BK - 1 > q0 + diag + wr) ||
                        (HAS_LEFT && j * DQ_BK < q0 + DQ_BQ - 1 + diag - wl);
    const int klim = sk - kbase, dlim = q0 + wrow + g + diag + wr - kbase;
    const int llim = q0 + wrow + g + diag - wl - kbase;
    const float ab = sl2 * (float)(kbase - (q0 + wrow + g + diag)); // ALiBi (as the forward)
    if (SOFTCAP) fg_softcap(p, s); // s becomes t = tanh(scale q.k / cap)
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      fg_u32 rw[DROPOUT ? NS / 4 : 1][4];
      if (DROPOUT) {
#pragma unroll
        for (int ch = 0; ch < NS / 4; ++ch)
          fg_drop_words(p, (fg_u32)bh, q0 + wrow + g + 8 * h2, (j * DQ_BK) / 32 + ch, t, rw[ch]);
      }
#pragma unroll
      for (int ns = 0; ns < NS; ++ns)
#pragma unroll
        for (int e = 2 * h2; e < 2 * h2 + 2; ++e) {
          const int kc = ns * 8 + (e & 1);
          const float dscore = SOFTCAP ? fmaf(-s[0][ns][e], s[0][ns][e], 1.f) : 1.f; // 1 - t^2
          float x = s[0][ns][e];
          if (ALIBI) x += fmaf(sl2, (float)(kc - 8 * h2), ab);
          float pv = fg_ex2(fmaf(x, fg_score_unit(p), -lse2[h2]));
          if (masked) {
            bool visible = kc < klim;
            if (HAS_RIGHT) visible = visible && kc - 8 * h2 <= dlim;
            if (HAS_LEFT) visible = visible && kc - 8 * h2 >= llim;
            if (!visible) pv = 0.f;
          }
          float dpv = dp[0][ns][e];
          if (DROPOUT && !fg_drop_keep(p, rw[ns / 4], ns & 3, e & 1)) dpv = 0.f;
          else if (DROPOUT) dpv *= p.drop_scale;
          dp[0][ns][e] = pv * (dpv - drow[h2]) * dscore;
        }
    }
    // dQ += dS K(j): dS from registers as the A operand.
#pragma unroll
    for (int kk = 0; kk < DQ_BK / 16; ++kk) {
      fg_u32 a[4];
      a[0] = fg_pack(dp[0][2 * kk][0], dp[0][2 * kk][1]);
      a[1] = fg_pack(dp[0][2 * kk][2], dp[0][2 * kk][3]);
      a[2] = fg_pack(dp[0][2 * kk + 1][0], dp[0][2 * kk + 1][1]);
      a[3] = fg_pack(dp[0][2 * kk + 1][2], dp[0][2 * kk + 1][3]);
#pragma unroll
      for (int n2 = 0; n2 < NO / 2; ++n2) {
        fg_u32 bb[4];
        fg_ldsm_x4_trans(k_s + d0.at(16 * kk, n2), bb[0], bb[1], bb[2], bb[3]);
        fg_mma(acc[0][2 * n2], a, bb[0], bb[1]);
        fg_mma(acc[0][2 * n2 + 1], a, bb[2], bb[3]);
      }
    }
    if (DQ_STAGES == 1 && j + 1 < n_tiles) {
      __syncthreads(); // every warp is done with tile j
      fg_load_tile<DQ_BK, 128>(sK, kg, (j + 1) * DQ_BK, sk, p.k_stride_s, hd);
      fg_load_tile<DQ_BK, 128>(sV, vg, (j + 1) * DQ_BK, sk, p.v_stride_s, hd);
      fg_cp_async_commit();
    }
  }
  // dQ through this warp's own rows of the Q tile.
  fg_cp_async_wait<0>();
  __syncthreads();
#pragma unroll
  for (int nt = 0; nt < NO; ++nt)
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      const int off = fg_swz<CH>(wrow + g + 8 * h2, nt) + 4 * t;
      *reinterpret_cast<fg_u32 *>(fg_smem + off) =
          fg_pack(acc[0][nt][2 * h2] * p.scale, acc[0][nt][2 * h2 + 1] * p.scale);
    }
  __syncthreads();
  // Packed sequences own only their rows; padded rows get zeros up to seqlen_q.
  fg_store_tile<DQ_BQ, 128>(fg_smem, (fg_u16 *)p.dq + b * p.dq_stride_b + sq.q_row0 * p.dq_stride_s + h * p.dq_stride_h,
                            q0, sq.packed ? len_q : p.seqlen_q, p.dq_stride_s, hd);
}
{% end %}
