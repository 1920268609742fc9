// How the CPU kernels walk [rows, cols] problems: tiles of noise that stay in
// L1, noise blocks shared by short rows, and rows split over threads when there
// are fewer rows than threads. Every CPU kernel (st_softmax, gumbel_topk,
// sample, the vocabulary shards) iterates the same way.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <stdint.h>
#include <vector>

#include "noise_cpu.h"

namespace fused_gumbel {
namespace cpu {

constexpr int64_t kTile = 512;         // positions per noise tile (fits in L1)
constexpr int64_t kMinSegment = 8192;  // never split a row finer than this

inline int64_t tiles(int64_t cols) { return (cols + kTile - 1) / kTile; }

// Where a row's noise comes from. Row r's column c has the flat position
// r * row_stride + offset + c: row_stride = cols and offset = 0 for a whole
// tensor, the full vocabulary and the shard's first column for a vocabulary
// shard. The noise is generated tile by tile, or read from a block generated
// for several short rows at once (one Philox step yields 64 positions; a router
// row has 8).
struct NoiseSource {
  uint64_t seed;
  uint64_t base;
  uint64_t row_stride;
  uint64_t offset = 0;
  const float* block = nullptr;  // noise of positions [block_first, block_end)
  uint64_t block_first = 0;
  uint64_t block_end = 0;

  uint64_t row_position(int64_t r) const {
    return static_cast<uint64_t>(r) * row_stride + offset;
  }

  // The noise of positions [first, first + n): in the block, or in scratch.
  const float* get(uint64_t first, int64_t n, float* scratch) const {
    if (first >= block_first && first + static_cast<uint64_t>(n) <= block_end) {
      return block + (first - block_first);
    }
    fill_noise_cpu(seed, base, first, n, scratch);
    return scratch;
  }
};

// Runs fn(r, src) for rows [begin, end), generating the noise of short rows in
// blocks of about kTile positions first (when their positions are contiguous).
template <typename Fn>
void for_rows_with_noise(NoiseSource src, int64_t begin, int64_t end,
                         int64_t cols, Fn fn) {
  if (cols >= kTile || src.row_stride != static_cast<uint64_t>(cols)) {
    for (int64_t r = begin; r < end; ++r) fn(r, src);
    return;
  }
  const int64_t rows_per_block = kTile / std::max<int64_t>(cols, 1);
  std::vector<float> block(static_cast<size_t>(rows_per_block * cols));
  for (int64_t r0 = begin; r0 < end; r0 += rows_per_block) {
    const int64_t r1 = std::min(end, r0 + rows_per_block);
    src.block = block.data();
    src.block_first = src.row_position(r0);
    src.block_end = src.row_position(r1);
    fill_noise_cpu(src.seed, src.base, src.block_first, (r1 - r0) * cols, block.data());
    for (int64_t r = r0; r < r1; ++r) fn(r, src);
  }
}

// How a [rows, cols] problem is cut into segments.
struct Plan {
  int64_t chunks;     // segments per row
  int64_t chunk_len;  // columns per segment (the last may be shorter)
};

// Segment k of a plan: columns [c0, c1) of row r.
struct Segment {
  int64_t r, c0, c1;
};

// Runs fn(k, segment) for every segment of the plan, in parallel.
template <typename Fn>
void for_each_segment(const Plan& plan, int64_t rows, int64_t cols, Fn fn) {
  at::parallel_for(0, rows * plan.chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t c0 = (k % plan.chunks) * plan.chunk_len;
      fn(k, Segment{k / plan.chunks, c0, std::min(cols, c0 + plan.chunk_len)});
    }
  });
}

// Whole rows when there are at least as many rows as threads (or rows too
// short to be worth splitting); else each row in chunks of whole tiles, enough
// of them to give every thread work.
inline Plan plan_segments(int64_t rows, int64_t cols) {
  const int64_t threads = at::get_num_threads();
  if (rows >= threads || cols < 2 * kMinSegment) return {1, cols};
  const int64_t want = (threads + rows - 1) / rows;
  const int64_t chunks = std::min(want, cols / kMinSegment);
  int64_t len = (cols + chunks - 1) / chunks;
  len = (len + kTile - 1) / kTile * kTile;
  return {(cols + len - 1) / len, len};
}

// Rows per parallel_for task: about 32K elements, so short rows are batched.
inline int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
}

}  // namespace cpu
}  // namespace fused_gumbel
