"""Builds fused_gumbel._C: the C++ CPU kernels always, the CUDA kernels whenever
nvcc is found (GPU present or not), so the CUDA path is compiled and linked on
every build machine.

Environment knobs:
  FUSED_GUMBEL_CUDA=0          skip the CUDA sources even if nvcc exists
  FUSED_GUMBEL_CPU_CAPABILITY  "avx2" or "default" (auto-detected from the build CPU)
  TORCH_CUDA_ARCH_LIST         defaults to "8.0;9.0+PTX" (sm_80, sm_90, PTX for newer)
  FUSED_GUMBEL_PTXAS_VERBOSE=1 print ptxas resource usage (registers, spills)
  FUSED_GUMBEL_PREBUILT=1      compile nothing: the package uses the extension that
                               `setup.py build_ext --inplace` left in fused_gumbel/
                               (`make build`'s editable install: pip builds in a new
                               temporary folder each time, a second full build)
"""

import glob
import os
import shutil
import sys


def _is_toolkit_root(path):
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and \
        os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))


def _find_cuda_home():
    """The toolkit root (the folder holding bin/nvcc and include/), not the
    folder of an nvcc symlink or wrapper script on PATH."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    return next((c for c in candidates if _is_toolkit_root(c)), None)


_cuda_home = _find_cuda_home() if os.environ.get("FUSED_GUMBEL_CUDA", "1") != "0" else None
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")

from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _cpu_has_avx2():
    choice = os.environ.get("FUSED_GUMBEL_CPU_CAPABILITY", "").lower()
    if choice:
        return choice == "avx2"
    if sys.platform != "linux":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return all(f" {flag}" in flags for flag in ("avx2", "fma", "f16c"))


def _nvidia_include_dirs():
    """CUDA library headers (cusparse.h, cublas_v2.h) that torch's headers
    include ship in the nvidia-* wheels torch depends on."""
    dirs = []
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(entry, "nvidia", "*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


def _extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # -ffp-contract=off: the noise must be bit-identical to the CUDA and Triton
    # kernels, so no multiply-add may be fused behind our back.
    # -fopenmp: at::parallel_for is header-inline OpenMP; without the flag it
    # silently runs on one thread. libgomp resolves to the one torch loaded.
    cxx = ["-O3", "-ffp-contract=off", "-fopenmp"]
    link = ["-fopenmp"]
    if _cpu_has_avx2():
        # at::vec picks its AVX2 code only when CPU_CAPABILITY_AVX2 is defined.
        cxx += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    else:
        cxx += ["-DCPU_CAPABILITY=DEFAULT"]
    include_dirs = [os.path.join(HERE, "csrc")]
    if not _cuda_home:
        return CppExtension("fused_gumbel._C", sources, include_dirs=include_dirs,
                            extra_compile_args={"cxx": cxx}, extra_link_args=link)
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo",
            "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__"]
    if os.environ.get("FUSED_GUMBEL_PTXAS_VERBOSE") == "1":
        nvcc += ["-Xptxas", "-v"]
    return CUDAExtension("fused_gumbel._C", sources,
                         include_dirs=include_dirs + _nvidia_include_dirs(),
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                         extra_link_args=link)


def _extensions():
    if os.environ.get("FUSED_GUMBEL_PREBUILT") != "1":
        return [_extension()]
    if not glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_gumbel", "_C*.so")):
        sys.exit("FUSED_GUMBEL_PREBUILT=1, but fused_gumbel/ holds no built extension: "
                 "run `python setup.py build_ext --inplace` first (or `make build`)")
    return []


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension},
)
