#include "huge_pages.h"

#include <stdint.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fused_gumbel {

namespace {

constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

// Only the whole huge pages inside the buffer are advised, so memory the C
// library or other tensors use around it is left alone; a refusal (THP off, an
// old kernel) is harmless, hence unchecked.
void advise_huge_pages(void* ptr, size_t bytes) {
#if defined(MADV_HUGEPAGE)
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)ptr;
  (void)bytes;
#endif
}

at::Tensor advised(at::Tensor t) {
  if (t.device().is_cpu() && t.nbytes() >= 2 * kHugePage) advise_huge_pages(t.data_ptr(), t.nbytes());
  return t;
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return advised(at::empty(sizes, options));
}

at::Tensor empty_output(at::IntArrayRef sizes, at::IntArrayRef strides,
                        const at::TensorOptions& options) {
  return advised(at::empty_strided(sizes, strides, options));
}

}  // namespace fused_gumbel
