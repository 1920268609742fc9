// The Gumbel noise of a run of consecutive positions, on the CPU.
#pragma once

#include <stdint.h>

namespace fused_gumbel {

// Writes the noise of positions [first, first + n) under (seed, base) to out.
void fill_noise_cpu(uint64_t seed, uint64_t base, uint64_t first, int64_t n,
                    float* out);

// seed=None: a fresh 64-bit key from the CPU generator, so torch.manual_seed
// governs the noise and consecutive calls differ (counter base 0).
uint64_t draw_seed_cpu();

}  // namespace fused_gumbel
