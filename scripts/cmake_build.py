"""Configures and builds CMakeLists.txt against the libtorch of this Python's
torch, passing the CUDA locations torch's CMake config needs (the toolkit root,
and nvrtc, which ships in the nvidia-* wheels)."""

import glob
import os
import shutil
import subprocess
import sys

import torch


def main(build_dir: str) -> int:
    cmake = shutil.which("cmake", path=os.path.dirname(sys.executable)) or "cmake"
    args = [cmake, "-S", ".", "-B", build_dir, f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"]
    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    if torch.version.cuda and os.path.isfile(os.path.join(cuda_home, "bin", "nvcc")):
        args += [f"-DCUDAToolkit_ROOT={cuda_home}", f"-DCUDA_TOOLKIT_ROOT_DIR={cuda_home}",
                 f"-DCMAKE_CUDA_COMPILER={os.path.join(cuda_home, 'bin', 'nvcc')}"]
        includes = sorted(set(d for site in sys.path for d in glob.glob(os.path.join(site, "nvidia", "*", "include"))))
        if includes:
            args.append("-DFUSED_GUMBEL_EXTRA_INCLUDE_DIRS=" + ";".join(includes))
        for site in sys.path:
            nvrtc = sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*")))
            nvrtc = [p for p in nvrtc if "builtins" not in p and ".alt." not in p]
            if nvrtc:
                args.append(f"-DCUDA_nvrtc_LIBRARY={nvrtc[0]}")
                break
    else:
        args.append("-DFUSED_GUMBEL_CUDA=OFF")
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    subprocess.run(args, check=True)
    jobs = str(os.cpu_count() or 2)
    subprocess.run([cmake, "--build", build_dir, "-j", jobs], check=True)
    lib = glob.glob(os.path.join(build_dir, "libfused_gumbel.*"))
    if not lib:
        print("no libfused_gumbel built", file=sys.stderr)
        return 1
    # The library registers the operators when loaded, as a C++ user's would.
    code = ("import torch; torch.ops.load_library(%r); "
            "y = torch.ops.fused_gumbel.st_softmax(torch.randn(3, 5), 1.0, True, -1, 7)[0]; "
            "assert (y.sum(-1) == 1).all(); print('libfused_gumbel loads and samples')") % os.path.abspath(lib[0])
    return subprocess.run([sys.executable, "-c", code]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build-cmake"))
