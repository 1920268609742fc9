// Fresh CPU buffers that the kernels write in full: on Linux their 2 MiB-aligned
// interior is advised to use transparent huge pages before the first write.
// A large fresh allocation is mmap'ed by the C library and every 4 KiB page
// faults on first touch; in a virtual machine those faults cost more than the
// kernel's own work (measured: a 512 x 32768 float32 forward+backward fell from
// 111 to 43 ms with huge pages). PyTorch's allocator does the same for every
// tensor when THP_MEM_ALLOC_ENABLE=1; this asks it for our outputs only.
#pragma once

#include <ATen/ATen.h>

namespace fused_gumbel {

// at::empty(sizes, options), advised as above when on the CPU and large enough
// to hold a whole huge page.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

// The same with the given strides (at::empty_strided).
at::Tensor empty_output(at::IntArrayRef sizes, at::IntArrayRef strides,
                        const at::TensorOptions& options);

}  // namespace fused_gumbel
