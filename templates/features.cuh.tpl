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
// Rows have a last visible key (causal, window) and a first one (window).
constexpr bool HAS_RIGHT = CAUSAL || WINDOW;
constexpr bool HAS_LEFT = WINDOW;
// Scores are transformed before the softmax: then they are already in log2
// units, and the softmax multiplies them by 1 instead of scale * log2(e).
constexpr bool SCORE_MOD = SOFTCAP || ALIBI;

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

// The ALiBi slope of (b, h) in log2 units.
template <class P>
__device__ __forceinline__ float fg_slope2(const P &p, int b, int h) {
  return ALIBI ? p.alibi[b * p.alibi_stride_b + h] * 1.4426950408889634f : 0.f;
}

// tanh(x) = 1 - 2 / (e^2x + 1), from ex2 and rcp: absolute error about 1e-7
// (tanh.approx.f32's 2^-11 relative error, scaled by the cap, would show in
// bf16 outputs).  Saturates to +-1 without NaN: rcp(inf) = 0.
__device__ __forceinline__ float fg_tanh(float x) {
  const float e = fg_ex2(x * 2.8853900817779268f); // e^(2x) = 2^(2x log2 e)
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(e + 1.f));
  return fmaf(-2.f, r, 1.f);
}

// A raw score q.k turned into a log2-unit score: scale (or the softcap's
// cap * tanh(scale s / cap)), plus the ALiBi bias given as slope2 * (key -
// row - diag) = bias.  Only called when SCORE_MOD.
template <class P>
__device__ __forceinline__ float fg_score_mod(const P &p, float s, float bias) {
  float x = SOFTCAP ? fg_tanh(s * p.cap_pre) * p.cap_log2 : s * p.scale_log2;
  if (ALIBI) x += bias;
  return x;
}
