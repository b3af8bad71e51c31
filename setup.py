"""Build retina_fast and its native extension ``retina_fast._C`` ahead of time.

The C++ kernels always build. The CUDA kernels build too when a CUDA toolkit whose major version
matches torch's CUDA build is present (CUDA_HOME or nvcc on PATH), for sm_80 and sm_90 unless
TORCH_CUDA_ARCH_LIST says otherwise. RETINA_FAST_NO_EXT=1 installs the pure-Python package only
(the ops then run their reference path); RETINA_FAST_NO_CUDA=1 skips the CUDA kernels.
"""
import glob
import os
import re
import subprocess

from setuptools import setup

# torch guesses CUDA_HOME from nvcc's location (/usr/local/bin -> /usr/local, which has no CUDA
# headers); the toolkit proper lives in /usr/local/cuda on our machines.
if "CUDA_HOME" not in os.environ and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"


def _cuda_toolkit_matches(torch):
    from torch.utils import cpp_extension

    if os.environ.get("RETINA_FAST_NO_CUDA") == "1" or torch.version.cuda is None:
        return False
    home = cpp_extension.CUDA_HOME
    if not home or not os.path.exists(os.path.join(home, "bin", "nvcc")):
        return False
    out = subprocess.run([os.path.join(home, "bin", "nvcc"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.", out)
    return bool(m) and m.group(1) == torch.version.cuda.split(".")[0]


def _cuda_include_dirs():
    # pip-installed CUDA 13 torch ships the CUDA headers (cusparse.h, ...) it includes in the
    # nvidia/cu13 wheel; the system toolkit may lack some of them.
    import nvidia  # noqa: F401  (namespace package from the nvidia-* wheels)

    dirs = []
    for base in getattr(nvidia, "__path__", []):
        dirs += glob.glob(os.path.join(base, "cu*", "include"))
    return dirs


def _extensions():
    if os.environ.get("RETINA_FAST_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils import cpp_extension

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # torch adds the C++ standard it was built with (C++20 for 2.14). -fopenmp: at::parallel_for is
    # a header template that only runs in parallel when the including file is built with OpenMP.
    # -fno-trapping-math: lets the compiler turn `c ? a * x : x` into a select (it may not
    # speculate a multiply that could raise an FP exception otherwise); the branch it emitted instead
    # mispredicts half the time on random-signed activations (bias_act's lrelu backward ran 10x
    # slower). No result changes: we never trap on FP exceptions.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math"]
    define_macros = []
    ext_cls = cpp_extension.CppExtension
    kwargs = {}
    if _cuda_toolkit_matches(torch):
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("csrc/cuda/*.cu"))
        define_macros.append(("RETINA_FAST_WITH_CUDA", None))
        ext_cls = cpp_extension.CUDAExtension
        kwargs["include_dirs"] = _cuda_include_dirs()
        kwargs["extra_compile_args"] = {"cxx": cxx, "nvcc": ["-O3"]}
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
    ext = ext_cls("retina_fast._C", sources, define_macros=define_macros, extra_link_args=["-fopenmp"], **kwargs)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
