{# Masks and score modifiers shared by the forward and backward kernels
   (fagen_attention_features in include/fagen.h is the specification).  The
   runtime prepares the values (runtime/fg_features.c): offsets and lengths,
   window extents with causal folded in and "unbounded" as an extent no row
   reaches, the softcap as scale / cap and cap * log2(e), the slopes.
   Included inside a kernel's namespace, after CAUSAL.  A variant without a
   feature compiles none of its code: each test below is on a constexpr. #}
constexpr bool VARLEN = {{ v.varlen }};
constexpr bool WINDOW = {{ v.window }};
constexpr bool SOFTCAP = {{ v.softcap }};
constexpr bool ALIBI = {{ v.alibi }};
constexpr bool DROPOUT = {{ v.dropout }};
// Rows have a last visible key (causal, window) and a first one (window).
constexpr bool HAS_RIGHT = CAUSAL || WINDOW;
constexpr bool HAS_LEFT = WINDOW;

// One batch entry: where its query and key rows start in their buffers and
// how many there are.
struct fg_seq {
  fg_i64 q_row0, k_row0;
  int len_q, len_k;
  bool packed; // rows past len exist in no buffer: never write them
};

// Offsets are clamped to the buffers, so bad ones cannot reach outside them.
template <class P>
__device__ __forceinline__ fg_seq fg_sequence(const P &p, int b) {
  fg_seq s;
  s.q_row0 = 0;
  s.k_row0 = 0;
  s.len_q = p.seqlen_q;
  s.len_k = p.seqlen_k;
  s.packed = false;
  if (VARLEN) {
    if (p.cu_q) {
      const int qa = min(max(p.cu_q[b], 0), p.total_q), qe = min(max(p.cu_q[b + 1], qa), p.total_q);
      const int ka = min(max(p.cu_k[b], 0), p.total_k), ke = min(max(p.cu_k[b + 1], ka), p.total_k);
      s.q_row0 = qa;
      s.k_row0 = ka;
      s.len_q = min(qe - qa, p.seqlen_q);
      s.len_k = min(ke - ka, p.seqlen_k);
      s.packed = true;
    }
    if (p.used_q) s.len_q = min(s.len_q, max(p.used_q[b], 0));
    if (p.used_k) s.len_k = min(s.len_k, max(p.used_k[b], 0));
  }
  return s;
}

// Scores live in "units" that one multiply turns into log2 units for the
// softmax's exp2 (folded into its FFMA, as without features): raw q.k with
// the multiplier scale * log2(e); with softcap, t = tanh(scale q.k / cap)
// with the multiplier cap * log2(e).
template <class P>
__device__ __forceinline__ float fg_score_unit(const P &p) {
  return SOFTCAP ? p.cap_log2 : p.scale_log2;
}

// The ALiBi slope of (b, h) in score units (see fg_score_unit), so that
// slope * (j - i - d) adds to a score before the multiplier.
template <class P>
__device__ __forceinline__ float fg_slope_u(const P &p, int b, int h) {
  return ALIBI ? p.alibi[b * p.alibi_stride_b + h] * 1.4426950408889634f / fg_score_unit(p) : 0.f;
}

// tanh of two values: tanh.approx.f32, relative error below 2^-10.9 (what
// FlashAttention uses).  Measured on an H100 at head_dim 128 (softcap over
// no softcap, forward): 1.07-1.11x; 1 - 2 / (e^2x + 1) from ex2 and rcp
// (absolute error 1e-7) cost 1.19-1.25x, since the softmax's exp2 already
// keeps the MUFU unit busy and a kernel runs one warp per scheduler; and
// tanh.approx.f16x2 on the pair was no faster and too coarse (LSE error
// 5e-4).
__device__ __forceinline__ void fg_tanh2(float &a, float &b) {
  asm("tanh.approx.f32 %0, %0;" : "+f"(a));
  asm("tanh.approx.f32 %0, %0;" : "+f"(b));
}

// The softcap's t = tanh(cap_pre * s) over a tile of scores in place, in
// pairs.  Scores then are in softcap units (fg_score_unit).
template <class P, int A, int B>
__device__ __forceinline__ void fg_softcap(const P &p, float (&s)[A][B][4]) {
#pragma unroll
  for (int i = 0; i < A; ++i)
#pragma unroll
    for (int j = 0; j < B; ++j)
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        s[i][j][e] *= p.cap_pre;
        s[i][j][e + 1] *= p.cap_pre;
        fg_tanh2(s[i][j][e], s[i][j][e + 1]);
      }
}

// Dropout (fagen.h gives the exact rule).  The mask of element (i, j) comes
// from Philox4x32-10 with counter {4 (j >> 5) + ((j >> 1) & 3), i, bh,
// offset_lo}: in the mma accumulator layout a thread holds, of each row, the
// keys 2t, 2t + 1 of every 8, so one call gives it the 8 values it needs
// from 32 keys (word n for n-tile n, the low half for the even key), and no
// two threads compute the same call.
__device__ __forceinline__ void fg_philox(fg_u32 c0, fg_u32 c1, fg_u32 c2, fg_u32 c3, fg_u32 k0,
                                          fg_u32 k1, fg_u32 (&r)[4]) {
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const fg_u32 lo0 = 0xD2511F53u * c0, hi0 = __umulhi(0xD2511F53u, c0);
    const fg_u32 lo1 = 0xCD9E8D57u * c2, hi1 = __umulhi(0xCD9E8D57u, c2);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  r[0] = c0;
  r[1] = c1;
  r[2] = c2;
  r[3] = c3;
}

// The random words of row i (within its sequence), 32-key chunk `chunk`,
// lane position t, for head bh = b * heads_q + h.
template <class P>
__device__ __forceinline__ void fg_drop_words(const P &p, fg_u32 bh, int i, int chunk, int t, fg_u32 (&r)[4]) {
  fg_philox(4u * (fg_u32)chunk + (fg_u32)t, (fg_u32)i, bh, p.drop_ctr3, p.drop_key0, p.drop_key1, r);
}

// Whether key 2t + e of n-tile n (0-3) of the chunk is kept.  n is a
// compile-time constant where the tile layout allows (then this is one
// compare).
template <class P>
__device__ __forceinline__ bool fg_drop_keep(const P &p, const fg_u32 (&r)[4], int n, int e) {
  const fg_u32 w = n == 0 ? r[0] : n == 1 ? r[1] : n == 2 ? r[2] : r[3];
  return (e ? (w >> 16) : (w & 0xffffu)) >= p.drop_p16;
}
