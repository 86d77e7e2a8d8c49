{#
  Simple forward attention: correct first, fast later (the tensor-core
  kernels are separate templates).  Scalar FMA only; no tensor cores.

  Layout: one CTA takes block_q query rows of one (batch, head); each warp owns
  block_q / warps of those rows.  For each K/V tile of block_kv keys, lane j
  scores key j (and j + 32, ...) against a row, the warp reduces the row max
  and sum (online softmax in the exp2 domain), and every lane accumulates
  head_dim / 32 output columns from the V tile.
#}
{% include("common.cuh.tpl") %}
{% include("fwd_params.cuh.tpl") %}
{%
  local D, BQ, BK, W = v.head_dim, v.block_q, v.block_kv, v.warps
  R = BQ // W           -- query rows per warp
  KSTR = D + 2          -- shared row stride of K and V in elements: odd in
                        -- 32-bit words, so lanes reading different rows
                        -- hit different banks
  local smem = BQ * D * 4 + 2 * BK * KSTR * 2
  smem = (smem + 15) // 16 * 16
  assert(smem == v.smem_bytes, "shared-memory layout disagrees with the generator's resource model")
%}

struct alignas(16) fg_v4 {
  fg_u32 x, y, z, w;
};

// Two packed 16-bit elements -> two floats.
__device__ __forceinline__ void fg_store_pair(float *dst, fg_u32 w) {
  dst[0] = fg_to_float((fg_u16)(w & 0xffffu));
  dst[1] = fg_to_float((fg_u16)(w >> 16));
}

// minBlocks 1: without it ptxas (via NVRTC) aims at a register count that spills.
extern "C" __global__ void __launch_bounds__({{ v.threads }}, 1)
{{ v.name }}(const fg_fwd_params p) {
  constexpr int D = {{ v.head_dim }};
  constexpr int BQ = {{ v.block_q }};
  constexpr int BK = {{ v.block_kv }};
  constexpr int R = {{ R }};
  constexpr int KSTR = {{ KSTR }};
  constexpr int NC = D / 32;   // output columns per lane
  constexpr int KPL = BK / 32; // keys per lane in one tile
  constexpr int THREADS = {{ v.threads }};

  extern __shared__ __align__(16) unsigned char fg_smem[];
  float *q_s = reinterpret_cast<float *>(fg_smem);                      // [BQ][D]
  fg_u16 *k_s = reinterpret_cast<fg_u16 *>(fg_smem + BQ * D * 4);       // [BK][KSTR]
  fg_u16 *v_s = k_s + BK * KSTR;                                        // [BK][KSTR]

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const fg_i64 bid = blockIdx.x;
  const int q_block = (int)(bid % p.q_blocks);
  const fg_i64 bh = bid / p.q_blocks;
  const int h = (int)(bh % p.heads_q);
  const int b = (int)(bh / p.heads_q);
  const int hk = h / p.group;
  const int q0 = q_block * BQ;
  const int hd = p.head_dim;
  const fg_u16 *qg = (const fg_u16 *)p.q + b * p.q_stride_b + h * p.q_stride_h;
  const fg_u16 *kg = (const fg_u16 *)p.k + b * p.k_stride_b + hk * p.k_stride_h;
  const fg_u16 *vg = (const fg_u16 *)p.v + b * p.v_stride_b + hk * p.v_stride_h;
  fg_u16 *og = (fg_u16 *)p.o + b * p.o_stride_b + h * p.o_stride_h;

  // Q tile -> shared fp32, zero beyond the sequence and the actual head_dim
  // (head_dim is a multiple of 8, so an 8-element vector is all in or all out).
  for (int i = threadIdx.x; i < BQ * (D / 8); i += THREADS) {
    const int r = i / (D / 8), c = (i % (D / 8)) * 8;
    fg_v4 x = {0u, 0u, 0u, 0u};
    if (q0 + r < p.seqlen_q && c < hd)
      x = *reinterpret_cast<const fg_v4 *>(qg + (fg_i64)(q0 + r) * p.q_stride_s + c);
    float *dst = q_s + r * D + c;
    fg_store_pair(dst + 0, x.x);
    fg_store_pair(dst + 2, x.y);
    fg_store_pair(dst + 4, x.z);
    fg_store_pair(dst + 6, x.w);
  }

  // Query i sees key j iff j < seqlen_k (and, causal, j <= i + diag): causal
  // is aligned bottom-right when seqlen_q != seqlen_k.
  int kv_end = p.seqlen_k;
{% if v.causal then %}
  const int diag = p.seqlen_k - p.seqlen_q;
  kv_end = min(kv_end, q0 + BQ + diag); // keys past the block's last row are all masked: skip them
{% end %}

  float m[R], l[R], acc[R][NC];
#pragma unroll
  for (int r = 0; r < R; r++) {
    m[r] = FG_NEG_INF;
    l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < NC; c++) acc[r][c] = 0.f;
  }

  for (int k0 = 0; k0 < kv_end; k0 += BK) {
    __syncthreads(); // the previous tile is consumed (and, first time, Q is stored)
    for (int i = threadIdx.x; i < BK * (D / 8); i += THREADS) {
      const int r = i / (D / 8), c = (i % (D / 8)) * 8;
      fg_v4 kx = {0u, 0u, 0u, 0u}, vx = {0u, 0u, 0u, 0u};
      if (k0 + r < p.seqlen_k && c < hd) {
        kx = *reinterpret_cast<const fg_v4 *>(kg + (fg_i64)(k0 + r) * p.k_stride_s + c);
        vx = *reinterpret_cast<const fg_v4 *>(vg + (fg_i64)(k0 + r) * p.v_stride_s + c);
      }
      fg_u32 *kd = reinterpret_cast<fg_u32 *>(k_s + r * KSTR + c); // 4-byte aligned
      fg_u32 *vd = reinterpret_cast<fg_u32 *>(v_s + r * KSTR + c);
      kd[0] = kx.x; kd[1] = kx.y; kd[2] = kx.z; kd[3] = kx.w;
      vd[0] = vx.x; vd[1] = vx.y; vd[2] = vx.z; vd[3] = vx.w;
    }
    __syncthreads();

#pragma unroll
    for (int r = 0; r < R; r++) { // unrolled: acc[r] must stay in registers
      const int row_local = warp * R + r;
      const int row = q0 + row_local;
      if (row >= p.seqlen_q) continue; // uniform across the warp
      const float *qrow = q_s + row_local * D;
      float s[KPL];
      float tile_max = FG_NEG_INF;
#pragma unroll
      for (int kk = 0; kk < KPL; kk++) {
        const int key_local = kk * 32 + lane;
        const fg_u32 *krow = reinterpret_cast<const fg_u32 *>(k_s + key_local * KSTR);
        float dot = 0.f;
#pragma unroll 4
        for (int d2 = 0; d2 < D / 2; d2++) {
          const fg_u32 w = krow[d2];
          dot = fmaf(qrow[2 * d2], fg_to_float((fg_u16)(w & 0xffffu)), dot);
          dot = fmaf(qrow[2 * d2 + 1], fg_to_float((fg_u16)(w >> 16)), dot);
        }
        const int key = k0 + key_local;
        bool visible = key < p.seqlen_k;
{% if v.causal then %}
        visible = visible && key <= row + diag;
{% end %}
        s[kk] = visible ? dot * p.scale_log2 : FG_NEG_INF;
        tile_max = fmaxf(tile_max, s[kk]);
      }
      tile_max = fg_warp_max(tile_max);
      const float m_new = fmaxf(m[r], tile_max);
      if (m_new == FG_NEG_INF) continue; // no visible key yet
      const float alpha = exp2f(m[r] - m_new); // 0 when m[r] is -inf
      float psum = 0.f;
#pragma unroll
      for (int kk = 0; kk < KPL; kk++) {
        s[kk] = exp2f(s[kk] - m_new);
        psum += s[kk];
      }
      l[r] = l[r] * alpha + fg_warp_sum(psum);
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < NC; c++) acc[r][c] *= alpha;
#pragma unroll
      for (int kk = 0; kk < KPL; kk++) {
#pragma unroll 4
        for (int j = 0; j < 32; j++) {
          const float pj = __shfl_sync(0xffffffffu, s[kk], j);
          const fg_u16 *vrow = v_s + (kk * 32 + j) * KSTR;
#pragma unroll
          for (int c = 0; c < NC; c++) acc[r][c] = fmaf(pj, fg_to_float(vrow[lane + 32 * c]), acc[r][c]);
        }
      }
    }
  }

  // Normalize once; a row that saw no key gets O = 0 and LSE = -inf.
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int row = q0 + warp * R + r;
    if (row >= p.seqlen_q) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    fg_u16 *orow = og + (fg_i64)row * p.o_stride_s;
#pragma unroll
    for (int c = 0; c < NC; c++) {
      const int col = lane + 32 * c;
      if (col < hd) orow[col] = fg_from_float(acc[r][c] * inv);
    }
    if (p.lse && lane == 0)
      p.lse[((fg_i64)b * p.heads_q + h) * p.seqlen_q + row] =
          l[r] > 0.f ? m[r] * FG_LN2 + logf(l[r]) : FG_NEG_INF;
  }
}
