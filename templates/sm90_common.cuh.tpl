{#
  What the Hopper kernel families (fwd_sm90.cu.tpl, bwd_sm90.cu.tpl) share:
  mbarriers, TMA copies with tensor maps, wgmma descriptors and the
  commit/wait protocol.  Included inside the kernel's namespace, after its
  constants.
#}
{%
  -- Register budgets after setmaxnreg: the producer keeps 24, the consumers
  -- share the rest of the SM's 64K registers (multiples of 8, at most 240).
  PRODUCER_REGS = 24

  -- An operand list "%a, %b, ..." over registers first..first+n-1.
  function oplist(first, n)
    local t = {}
    for i = 0, n - 1 do t[#t + 1] = "%" .. (first + i) end
    return table.concat(t, ", ")
  end
  -- "+f"(d[0][0]), ... over an accumulator array [N/8][4].
  function accs(N)
    local t = {}
    for i = 0, N // 8 - 1 do
      for e = 0, 3 do t[#t + 1] = '"+f"(d[' .. i .. '][' .. e .. '])' end
    end
    return table.concat(t, ", ")
  end
%}
// The opaque 128-byte CUtensorMap of the driver API (cuda.h is not available
// to NVRTC); the runtime encodes one per operand for each call.
struct alignas(64) fg_tmap {
  fg_u64 opaque[16];
};
// ---- mbarriers ----
__device__ __forceinline__ void fg_mbar_init(fg_u32 bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
}
// Arrives once and adds `bytes` to the transactions the current phase waits for.
__device__ __forceinline__ void fg_mbar_expect(fg_u32 bar, fg_u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void fg_mbar_arrive(fg_u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}
// Waits until the phase of parity `parity` has completed.  A fresh barrier
// counts its (nonexistent) previous phase, parity 1, as completed.
__device__ __forceinline__ void fg_mbar_wait(fg_u32 bar, int parity) {
  fg_u32 done;
  do {
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 " selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  } while (!done);
}

// ---- TMA: one box of a 4-D tensor [batch][heads][seq][head_dim] ----
__device__ __forceinline__ void fg_tma_load(fg_u32 dst, const fg_tmap &map, int col, int row, int head,
                                            int batch, fg_u32 bar) {
  asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
               " [%0], [%1, {%2, %3, %4, %5}], [%6];"
               :: "r"(dst), "l"((fg_u64)&map), "r"(col), "r"(row), "r"(head), "r"(batch), "r"(bar)
               : "memory");
}

// The shared box at src (64 columns by 64 rows, swizzled) to the tensor at
// (col, row, head, batch); rows and columns outside the tensor are not
// written.  Asynchronous: completes with the bulk group this thread commits.
__device__ __forceinline__ void fg_tma_store(const fg_tmap &map, fg_u32 src, int col, int row, int head,
                                             int batch) {
  asm volatile("cp.async.bulk.tensor.4d.global.shared::cta.bulk_group [%0, {%1, %2, %3, %4}], [%5];"
               :: "l"((fg_u64)&map), "r"(col), "r"(row), "r"(head), "r"(batch), "r"(src)
               : "memory");
}

// ---- wgmma ----
// Shared-memory matrix descriptors with the 128-byte swizzle, for the k16
// steps of one tile from one low word.  The low word holds the start address
// >> 4 in bits 0-13 (for a shared address below 256 KB) and the leading byte
// offset >> 4 from bit 16; the high word the stride byte offset >> 4 (1024
// for every tile here: eight 128-byte rows) and the swizzle (bit 62).  So
// the descriptor of tile + off is the tile's low word plus off >> 4 (off a
// multiple of 16, no carry out of the address field) beside a constant high
// word.  A whole descriptor per step costs ptxas five uniform instructions
// (add, mask, shift, or, move) where this costs one add and a move.
__device__ __forceinline__ fg_u32 fg_desc_lo(fg_u32 tile, fg_u32 lbo) { return (tile >> 4) | ((lbo >> 4) << 16); }
__device__ __forceinline__ fg_u64 fg_desc_step(fg_u32 lo, fg_u32 off) {
  return ((fg_u64)((1024u >> 4) | (1u << 30)) << 32) | (lo + (off >> 4));
}
__device__ __forceinline__ void fg_wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void fg_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void fg_wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory"); }

// One arrival per consumer warp on an "empty" barrier: this warp is done
// with the buffer.
__device__ __forceinline__ void fg_release(fg_u32 bar) {
  __syncwarp();
  if ((threadIdx.x & 31) == 0) fg_mbar_arrive(bar);
}

