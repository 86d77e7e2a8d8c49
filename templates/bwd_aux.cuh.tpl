{#
  What the backward families (bwd_sm80.cu.tpl, bwd_sm90.cu.tpl) share: the
  fp32 dQ reductions, the LSE in the exp2 domain, and the kernels that run
  around the main one: NAME_pre (D = rowsum(dO * O), and in the atomic mode
  zeroes the dQ accumulator) and NAME_post (atomic mode: dQ = scale * dQacc
  in the caller's dtype and strides).  Included after the including
  template's namespace; it uses that template's D (compiled head_dim), DET,
  SM90 and PRE_THREADS.
#}
namespace {

// fp32 reduction into global memory (the atomic dQ accumulator).
__device__ __forceinline__ void fg_red2(float *addr, float a, float b) {
  if (SM90) {
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(addr), "f"(a), "f"(b) : "memory");
  } else {
    asm volatile("red.global.add.f32 [%0], %1;" ::"l"(addr), "f"(a) : "memory");
    asm volatile("red.global.add.f32 [%0], %1;" ::"l"(addr + 1), "f"(b) : "memory");
  }
}

// A row's log-sum-exp in the exp2 domain; +inf (P = 0) for rows that saw no
// key in the forward (-inf) and for rows past the end (loaded as +inf).
__device__ __forceinline__ float fg_lse2(float l) {
  return l == FG_NEG_INF ? __int_as_float(0x7f800000) : l * 1.4426950408889634f;
}

} // namespace

// ---- D = rowsum(dO * O); zero dQacc (atomic mode) -------------------------
// One warp per query row, a grid-stride loop over rows.
extern "C" __global__ void __launch_bounds__({{ v.bwd_aux_threads }})
{{ v.name }}_pre(const fg_bwd_params p) {
  const int lane = threadIdx.x & 31;
  const fg_i64 rows = (fg_i64)p.batch * p.heads_q * p.seqlen_q;
  const fg_i64 wstep = (fg_i64)gridDim.x * (PRE_THREADS / 32);
  for (fg_i64 r = (fg_i64)blockIdx.x * (PRE_THREADS / 32) + threadIdx.x / 32; r < rows; r += wstep) {
    const int i = (int)(r % p.seqlen_q);
    const fg_i64 bh = r / p.seqlen_q;
    const int h = (int)(bh % p.heads_q), b = (int)(bh / p.heads_q);
    const fg_seq sq = fg_sequence(p, b);
    const fg_i64 row = sq.q_row0 + i;
    const fg_u16 *o = (const fg_u16 *)p.o + b * p.o_stride_b + h * p.o_stride_h + row * p.o_stride_s;
    const fg_u16 *d = (const fg_u16 *)p.dout + b * p.do_stride_b + h * p.do_stride_h + row * p.do_stride_s;
    float s = 0.f;
    // Rows past a sequence's end (VARLEN) see no key: D = 0, never read.
    for (int c = lane; c * 8 < p.head_dim && (!VARLEN || i < sq.len_q); c += 32) {
      const uint4 ov = *reinterpret_cast<const uint4 *>(o + c * 8);
      const uint4 dv = *reinterpret_cast<const uint4 *>(d + c * 8);
      const fg_u32 ow[4] = {ov.x, ov.y, ov.z, ov.w}, dw[4] = {dv.x, dv.y, dv.z, dv.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s += fg_to_float((fg_u16)(ow[e] & 0xffff)) * fg_to_float((fg_u16)(dw[e] & 0xffff));
        s += fg_to_float((fg_u16)(ow[e] >> 16)) * fg_to_float((fg_u16)(dw[e] >> 16));
      }
    }
    s = fg_warp_sum(s);
    if (lane == 0) p.dsum[r] = s;
{% if v.op == "bwdwg" then %}
    // The main kernel's copy of the row statistics (fg_bwd_params.stats).
    if (lane == 0) {
      float *st = p.stats + bh * 2 * p.stats_ld;
      st[i] = fg_lse2(p.lse[r]);
      st[p.stats_ld + i] = s;
    }
{% end %}
    if (!DET) {
      float4 *acc = reinterpret_cast<float4 *>(p.dq_acc + r * D);
      for (int c = lane; c < D / 4; c += 32) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
{% if v.op == "bwdwg" then %}
  // Rows from seqlen_q up to stats_ld: P = 0 there (LSE +inf) and D = 0.
  const int pad = p.stats_ld - p.seqlen_q;
  const fg_i64 n_pad = (fg_i64)p.batch * p.heads_q * pad;
  for (fg_i64 x = (fg_i64)blockIdx.x * PRE_THREADS + threadIdx.x; x < n_pad;
       x += (fg_i64)gridDim.x * PRE_THREADS) {
    float *st = p.stats + x / pad * 2 * p.stats_ld;
    const int i = p.seqlen_q + (int)(x % pad);
    st[i] = __int_as_float(0x7f800000);
    st[p.stats_ld + i] = 0.f;
  }
{% end %}
}

{% if v.op ~= "bwddet" then %}
// ---- dQ = scale * dQacc, to the caller's dtype and strides ----------------
// One thread per 8 elements, a grid-stride loop.
extern "C" __global__ void __launch_bounds__({{ v.bwd_aux_threads }})
{{ v.name }}_post(const fg_bwd_params p) {
  const int hc = p.head_dim / 8;
  const fg_i64 n = (fg_i64)p.batch * p.heads_q * p.seqlen_q * hc;
  for (fg_i64 idx = (fg_i64)blockIdx.x * PRE_THREADS + threadIdx.x; idx < n;
       idx += (fg_i64)gridDim.x * PRE_THREADS) {
    const int c = (int)(idx % hc);
    const fg_i64 r = idx / hc;
    const int i = (int)(r % p.seqlen_q);
    const fg_i64 bh = r / p.seqlen_q;
    const int h = (int)(bh % p.heads_q), b = (int)(bh / p.heads_q);
    fg_i64 row = i;
    if (VARLEN) { // packed: the sequence's rows only; padded: zeros (dQacc is 0) up to seqlen_q
      const fg_seq sq = fg_sequence(p, b);
      if (sq.packed && i >= sq.len_q) continue;
      row += sq.q_row0;
    }
    const float4 *a = reinterpret_cast<const float4 *>(p.dq_acc + r * D + c * 8);
    const float4 x = a[0], y = a[1];
    uint4 out;
    out.x = fg_pack(x.x * p.scale, x.y * p.scale);
    out.y = fg_pack(x.z * p.scale, x.w * p.scale);
    out.z = fg_pack(y.x * p.scale, y.y * p.scale);
    out.w = fg_pack(y.z * p.scale, y.w * p.scale);
    *reinterpret_cast<uint4 *>((fg_u16 *)p.dq + b * p.dq_stride_b + h * p.dq_stride_h +
                               row * p.dq_stride_s + c * 8) = out;
  }
}
{% end %}

