// Moving one "unit" between memory and registers. A unit is the U consecutive
// flat positions one thread handles at a time, starting at a multiple of U; U is
// a multiple of 4, so a unit holds whole Philox groups. When a tensor's rows keep
// the flat alignment in memory (rows_keep_alignment), a unit lying inside the
// segment [c0, c1) of its row moves as 16-byte accesses; otherwise (a row edge,
// an odd row stride) element by element, lanes outside [c0, c1) untouched.
#pragma once

#include <stdint.h>

namespace fused_gumbel {

// 16 bytes of scalar_t: one vector memory access.
template <class scalar_t>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(scalar_t));
  scalar_t v[kSize];
};

// Whether, in every row, the flat position (row * cols + col) and the element's
// address are aligned alike: then a unit starting at a multiple of U is 16-byte
// aligned. True for contiguous tensors from the caching allocator.
inline bool rows_keep_alignment(const void* ptr, int64_t row_stride,
                                int64_t rows, int64_t cols, int64_t elem_size) {
  const int64_t per_vec = 16 / elem_size;
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 &&
         (rows <= 1 || (row_stride - cols) % per_vec == 0);
}

// x[k] = row[col0 + k] for the lanes inside [c0, c1), 0 elsewhere. kWhole: the
// caller knows the unit lies inside [c0, c1) and vec holds (no checks).
template <int U, bool kWhole = false, class scalar_t, class acc_t>
__device__ __forceinline__ void load_unit(const scalar_t* row, int64_t col0,
                                          int64_t c0, int64_t c1, bool vec,
                                          acc_t (&x)[U]) {
  constexpr int kV = Vec16<scalar_t>::kSize;
  static_assert(U % kV == 0, "a unit is a whole number of 16-byte vectors");
  if (kWhole || (vec && col0 >= c0 && col0 + U <= c1)) {
    const Vec16<scalar_t>* src = reinterpret_cast<const Vec16<scalar_t>*>(row + col0);
#pragma unroll
    for (int j = 0; j < U / kV; ++j) {
      const Vec16<scalar_t> v = src[j];
#pragma unroll
      for (int k = 0; k < kV; ++k) x[j * kV + k] = static_cast<acc_t>(v.v[k]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < U; ++k) {
      const int64_t col = col0 + k;
      x[k] = (col >= c0 && col < c1) ? static_cast<acc_t>(row[col]) : acc_t(0);
    }
  }
}

// row[col0 + k] = y[k] (cast to scalar_t) for the lanes inside [c0, c1); kWhole
// as in load_unit.
template <int U, bool kWhole = false, class scalar_t, class acc_t>
__device__ __forceinline__ void store_unit(scalar_t* row, int64_t col0, int64_t c0,
                                           int64_t c1, bool vec,
                                           const acc_t (&y)[U]) {
  constexpr int kV = Vec16<scalar_t>::kSize;
  if (kWhole || (vec && col0 >= c0 && col0 + U <= c1)) {
    Vec16<scalar_t>* dst = reinterpret_cast<Vec16<scalar_t>*>(row + col0);
#pragma unroll
    for (int j = 0; j < U / kV; ++j) {
      Vec16<scalar_t> v;
#pragma unroll
      for (int k = 0; k < kV; ++k) v.v[k] = static_cast<scalar_t>(y[j * kV + k]);
      dst[j] = v;
    }
  } else {
#pragma unroll
    for (int k = 0; k < U; ++k) {
      const int64_t col = col0 + k;
      if (col >= c0 && col < c1) row[col] = static_cast<scalar_t>(y[k]);
    }
  }
}

// A unit's values in the shared-memory row cache; `slot` is 16-byte aligned.
template <int U, class acc_t>
__device__ __forceinline__ void cache_store(acc_t* slot, const acc_t (&v)[U]) {
  constexpr int kV = Vec16<acc_t>::kSize;
#pragma unroll
  for (int j = 0; j < U / kV; ++j) {
    Vec16<acc_t> w;
#pragma unroll
    for (int k = 0; k < kV; ++k) w.v[k] = v[j * kV + k];
    reinterpret_cast<Vec16<acc_t>*>(slot)[j] = w;
  }
}

template <int U, class acc_t>
__device__ __forceinline__ void cache_load(const acc_t* slot, acc_t (&v)[U]) {
  constexpr int kV = Vec16<acc_t>::kSize;
#pragma unroll
  for (int j = 0; j < U / kV; ++j) {
    const Vec16<acc_t> w = reinterpret_cast<const Vec16<acc_t>*>(slot)[j];
#pragma unroll
    for (int k = 0; k < kV; ++k) v[j * kV + k] = w.v[k];
  }
}

}  // namespace fused_gumbel
