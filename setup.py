"""Native extensions only; the package's metadata is in pyproject.toml.

- mcts._core (C++, OpenMP over trees): always tried. Without OpenMP it is built serial.
- mcts._core_cuda (CUDA): built with nvcc when nvcc and a CUDA runtime library are found.

A native build that fails WARNS and the install goes on: the package then runs on its Numba or
NumPy backends (mcts.core.native picks what was built). Nothing is ever downloaded.

Environment switches:
  TREESEARCH_SKIP_CUDA_BUILD=1   never build the CUDA extension
  TREESEARCH_FORCE_CUDA_BUILD=1  build it even if no CUDA runtime is detected (this wins over
                                 SKIP), and fail the install if that build fails
  TREESEARCH_CUDA_ARCH           target architectures, e.g. "80;90+PTX" or "8.6" or "native"
                                 (default: sm_80, sm_90 and compute_90 PTX for newer GPUs)
  NVCC                           the nvcc to use (else CUDA_HOME/bin/nvcc, PATH, /usr/local/cuda)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"
HEADERS = [os.path.join(CSRC, "tree.h")]
DEFAULT_CUDA_ARCH = "80;90+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _warn(message: str) -> None:
    print(f"WARNING: treesearch: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# toolchain detection


def _find_nvcc() -> str | None:
    candidates = [os.environ.get("NVCC")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _cuda_library_dirs(nvcc: str) -> list[str]:
    """The library folders nvcc links from (read from `nvcc --dryrun`, which resolves wrappers
    and the targets/<arch>/lib layout)."""
    try:
        result = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    dirs = []
    for line in (result.stdout + result.stderr).splitlines():
        if "LIBRARIES=" in line:
            dirs += [d for d in re.findall(r'-L"?([^"\s]+)"?', line) if not d.rstrip("/").endswith("stubs")]
    top = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    dirs += [os.path.join(top, "lib64"), os.path.join(top, "lib")]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _has_cudart(nvcc: str) -> bool:
    names = ("libcudart_static.a", "libcudart.so", "cudart.lib")
    return any(os.path.exists(os.path.join(d, n)) for d in _cuda_library_dirs(nvcc) for n in names)


def _gencode_flags(spec: str) -> list[str]:
    """'80;90+PTX' -> -gencode flags: SASS for each arch, PTX too where marked +PTX."""
    if spec.strip() == "native":
        return ["-arch=native"]
    flags = []
    for item in filter(None, re.split(r"[;,\s]+", spec.strip())):
        ptx = item.upper().endswith("+PTX")
        arch = re.sub(r"^(sm_|compute_)", "", item[:-4] if ptx else item).replace(".", "")
        if not arch.isdigit():
            raise ValueError(f"TREESEARCH_CUDA_ARCH: cannot read {item!r} (use e.g. '80;90+PTX' or '8.6')")
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        if ptx:
            flags += ["-gencode", f"arch=compute_{arch},code=compute_{arch}"]
    return flags


# ---------------------------------------------------------------------------------------------
# build


class CudaExtension(Extension):
    """An extension compiled and linked by nvcc in one call (see BuildExt.build_cuda)."""

    def __init__(self, name: str, source: str, nvcc: str, required: bool):
        # optional: setuptools then skips a missing output instead of failing the install.
        super().__init__(name, sources=[source], depends=HEADERS, optional=not required)
        self.nvcc = nvcc
        self.required = required


class BuildExt(build_ext):
    """Builds each extension on its own; a failure warns (or, where required, fails)."""

    def finalize_options(self) -> None:
        if self.parallel is None:  # build the C++ and CUDA extensions side by side
            self.parallel = True
        super().finalize_options()

    def build_extension(self, ext: Extension) -> None:
        try:
            if isinstance(ext, CudaExtension):
                self.build_cuda(ext)
            else:
                self.build_cpp(ext)
        except Exception as error:  # noqa: BLE001 - any native failure falls back to Numba/NumPy
            if getattr(ext, "required", False):
                raise
            _warn(f"could not build {ext.name} ({type(error).__name__}: {error}); "
                  "the package falls back to its Numba/NumPy backends")

    def build_cpp(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001
            if "-fopenmp" not in ext.extra_compile_args:
                raise
            _warn(f"building {ext.name} with OpenMP failed ({error}); retrying without OpenMP (one thread)")
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a != "-fopenmp"]
            ext.extra_link_args = [a for a in ext.extra_link_args if a != "-fopenmp"]
            super().build_extension(ext)

    def build_cuda(self, ext: CudaExtension) -> None:
        import pybind11

        output = self.get_ext_fullpath(ext.name)
        inputs = [*ext.sources, *ext.depends, os.path.abspath(__file__)]
        if not self.force and os.path.exists(output) and \
                all(os.path.getmtime(output) >= os.path.getmtime(p) for p in inputs if os.path.exists(p)):
            print(f"skipping {ext.name}: up to date", flush=True)
            return
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        arch = _gencode_flags(os.environ.get("TREESEARCH_CUDA_ARCH") or DEFAULT_CUDA_ARCH)
        includes = {pybind11.get_include(), sysconfig.get_paths()["include"],
                    sysconfig.get_paths()["platinclude"], os.path.join(HERE, CSRC)}
        command = [
            ext.nvcc, "-shared", "-std=c++17", "-O3", "--fmad=false", *arch,
            "-Xcompiler", "-fPIC,-ffp-contract=off,-fvisibility=hidden",
            "--cudart", "static",
            *[f"-I{d}" for d in sorted(includes)],
            os.path.join(HERE, ext.sources[0]), "-o", output,
        ]
        print(" ".join(command), flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


def _extensions() -> list[Extension]:
    exts: list[Extension] = []
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError:
        _warn("pybind11 is not installed: skipping the native extensions (Numba/NumPy backends only)")
        return exts

    openmp = [] if sys.platform == "win32" else ["-fopenmp"]
    exts.append(Pybind11Extension(
        "mcts._core",
        [os.path.join(CSRC, "tree_cpu.cpp")],
        include_dirs=[CSRC],
        depends=HEADERS,
        cxx_std=17,
        extra_compile_args=["-O3", "-ffp-contract=off", *openmp],
        extra_link_args=[*openmp],
        optional=True,  # a failed build leaves no output to copy: skip it, do not fail the install
    ))

    force = _flag("TREESEARCH_FORCE_CUDA_BUILD")
    if _flag("TREESEARCH_SKIP_CUDA_BUILD") and not force:
        return exts
    nvcc = _find_nvcc()
    if nvcc is None:
        if force:
            raise RuntimeError("TREESEARCH_FORCE_CUDA_BUILD=1 but no nvcc was found (set NVCC or CUDA_HOME)")
        print("treesearch: nvcc not found, building without the CUDA extension", file=sys.stderr)
        return exts
    if not force and not _has_cudart(nvcc):
        print(f"treesearch: {nvcc} found but no CUDA runtime library (libcudart); "
              "building without the CUDA extension", file=sys.stderr)
        return exts
    exts.append(CudaExtension("mcts._core_cuda", os.path.join(CSRC, "tree_cuda.cu"), nvcc, required=force))
    return exts


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
