// How the CUDA kernels cut [rows, cols] rows into segments of units (see
// st_softmax_cuda.cu's header comment), and a unit's noise. Shared by the
// st_softmax kernels and the sampler.
#pragma once

#include <stdint.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "gumbel_math.h"

namespace fused_gumbel {

template <class scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Positions per unit: 16 bytes of a 16-bit type, else four (one Philox call).
template <class scalar_t>
constexpr int kUnit = sizeof(scalar_t) == 2 ? 8 : 4;

template <class T>
__device__ __forceinline__ T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// max(a, b), NaN if either is NaN (a row's max, as torch.max). In float32 one
// FMNMX.NAN instruction (sm_80 and later), against three for the comparisons.
__device__ __forceinline__ double max_nan(double a, double b) {
  return (b > a || b != b) ? b : a;
}
__device__ __forceinline__ float max_nan(float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return (b > a || b != b) ? b : a;
#endif
}

// Whether a beats b as a row's maximum: larger, or the first NaN.
template <class T>
__device__ __forceinline__ bool max_beats(T a, T b) {
  return a > b || (a != a && b == b);
}

// The first column of [c0, c1) in the unit starting at col0 whose value is m
// (the first NaN when m is NaN), or `none` when no lane there holds it.
template <int U, class T>
__device__ __forceinline__ int64_t first_col_of(const T (&s)[U], T m, int64_t col0, int64_t c0,
                                                int64_t c1, int64_t none) {
  int64_t arg = none;
#pragma unroll
  for (int k = U - 1; k >= 0; --k) {
    const int64_t col = col0 + k;
    const bool is_m = s[k] == m || (m != m && s[k] != s[k]);
    if (is_m && col >= c0 && col < c1) arg = col;
  }
  return arg;
}

// The lane of `col` in the unit starting at col0, or -1 when it lies elsewhere
// (unsigned: col may be INT64_MAX, col0 negative).
template <int U>
__device__ __forceinline__ int lane_in_unit(int64_t col, int64_t col0) {
  const uint64_t d = static_cast<uint64_t>(col) - static_cast<uint64_t>(col0);
  return d < static_cast<uint64_t>(U) ? static_cast<int>(d) : -1;
}

// Bit k set: lane k of the unit starting at col0 lies in [c0, c1).
template <int U>
__device__ __forceinline__ uint32_t lanes_inside(int64_t col0, int64_t c0, int64_t c1) {
  uint32_t bits = 0;
#pragma unroll
  for (int k = 0; k < U; ++k) {
    const int64_t col = col0 + k;
    bits |= (col >= c0 && col < c1 ? 1u : 0u) << k;
  }
  return bits;
}

// Lanes of the unit starting at col0 that lie outside [c0, c1) set to -inf:
// they add 0 to a sum of exponentials and never win an argmax.
template <int U, class T>
__device__ __forceinline__ void mask_outside(int64_t col0, int64_t c0, int64_t c1, T (&s)[U]) {
  if (col0 >= c0 && col0 + U <= c1) return;
#pragma unroll
  for (int k = 0; k < U; ++k) {
    const int64_t col = col0 + k;
    if (col < c0 || col >= c1) s[k] = neg_inf<T>();
  }
}

// Kernel arguments besides the shared ForwardParams / BackwardParams.
struct SegmentLayout {
  int64_t nchunks;       // segments per row
  int64_t chunk_len;     // columns per segment (the last one may be shorter)
  int64_t cache_stride;  // row-cache elements per segment and cached array
  int group_log2;        // log2 of the threads per segment
  bool vec;              // all tensors keep the flat alignment: 16-byte accesses
};

// The columns [c0, c1) of one row that a segment covers, and the units touching them.
struct Segment {
  int64_t row;
  int64_t c0, c1;
  int64_t row_pos;  // flat position of (row, 0)
  int64_t unit0;    // first unit
  int64_t units;    // number of units
};

template <int U>
__device__ __forceinline__ Segment make_segment(int64_t seg, const SegmentLayout& l,
                                                int64_t cols) {
  Segment s;
  s.row = l.nchunks == 1 ? seg : seg / l.nchunks;
  s.c0 = (seg - s.row * l.nchunks) * l.chunk_len;
  s.c1 = s.c0 + l.chunk_len < cols ? s.c0 + l.chunk_len : cols;
  s.row_pos = s.row * cols;
  s.unit0 = (s.row_pos + s.c0) / U;
  s.units = (s.row_pos + s.c1 - 1) / U - s.unit0 + 1;
  return s;
}

// Where this thread works: its segment (seg, of rows * nchunks) is processed by
// the group of 2^group_log2 threads it belongs to (slot: the group's place in the
// block), tig its index in that group. A group past the last segment is idle
// (units = 0) but still joins the group reductions.
struct SegmentThread {
  int group;
  int tig;
  int slot;
  int64_t seg;
  bool active;
  Segment sg;
  int64_t units;
};

template <int U>
__device__ __forceinline__ SegmentThread segment_thread(const SegmentLayout& l,
                                                        int64_t rows, int64_t cols) {
  SegmentThread t;
  t.group = 1 << l.group_log2;
  t.tig = threadIdx.x & (t.group - 1);
  t.slot = threadIdx.x >> l.group_log2;
  t.seg = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> l.group_log2) + t.slot;
  t.active = t.seg < rows * l.nchunks;
  t.sg = make_segment<U>(t.active ? t.seg : 0, l, cols);
  t.units = t.active ? t.sg.units : 0;
  return t;
}

// Column of lane 0 of the segment's i-th unit (negative before the row start).
template <int U>
__device__ __forceinline__ int64_t unit_col0(const Segment& s, int64_t i) {
  return (s.unit0 + i) * U - s.row_pos;
}

// g[j] = the noise at flat position 4 * group + j: one Philox call, all four
// output words used.
template <class acc_t>
__device__ __forceinline__ void group_noise(uint64_t seed, uint64_t base,
                                            int64_t group, acc_t (&g)[4]) {
  const uint64_t ctr = philox_counter(base, static_cast<uint64_t>(group) * 4);
  uint32_t w[4] = {static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0, 0};
  philox4x32_10<ScalarOps>(w[0], w[1], w[2], w[3], static_cast<uint32_t>(seed),
                           static_cast<uint32_t>(seed >> 32));
#pragma unroll
  for (int j = 0; j < 4; ++j) g[j] = static_cast<acc_t>(gumbel_from_bits<ScalarOps>(w[j]));
}

// s[j] += the noise at flat position 4 * group + j.
template <class acc_t>
__device__ __forceinline__ void add_group_noise(uint64_t seed, uint64_t base,
                                                int64_t group, acc_t (&s)[4]) {
  acc_t g[4];
  group_noise(seed, base, group, g);
#pragma unroll
  for (int j = 0; j < 4; ++j) s[j] += g[j];
}

// s[k] += the noise of the unit's k-th position (U / 4 Philox calls).
template <int U, class acc_t>
__device__ __forceinline__ void add_unit_noise(uint64_t seed, uint64_t base,
                                               int64_t unit, acc_t (&s)[U]) {
#pragma unroll
  for (int q = 0; q < U / 4; ++q) {
    acc_t part[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) part[j] = s[4 * q + j];
    add_group_noise(seed, base, unit * (U / 4) + q, part);
#pragma unroll
    for (int j = 0; j < 4; ++j) s[4 * q + j] = part[j];
  }
}

inline int log2_ceil(int64_t n) {
  int k = 0;
  while ((int64_t{1} << k) < n) ++k;
  return k;
}

// Threads per segment: one unit per thread while a segment has at most 32 units
// (several short rows per warp), a warp up to 32 * per_thread units, beyond that
// a block with about per_thread units per thread, at most 2^max_log2 threads.
inline int group_log2_for(int64_t units, int64_t per_thread, int max_log2 = 10) {
  if (units <= 32) return log2_ceil(units);
  if (units <= 32 * per_thread) return 5;
  return std::min(max_log2, log2_ceil((units + per_thread - 1) / per_thread));
}

}  // namespace fused_gumbel
