"""The CPU linear kernel of kernel.c (fp32 arithmetic): built with the machine's C compiler,
loaded with ctypes.

Decoding reads every weight once per step for a handful of rows, so its speed is the speed at
which the linear layers stream their weights. On the 2-core AVX2 machine of bench/RESULTS.md
("Engine speed on CPU, part 5") oneDNN's packed inner product read them at 12-22 GB/s at one
row and kernel.c at 20-28 (the machine streams ~30), 1.2-1.5x faster at 8 rows, and level with
oneDNN at hundreds of rows (a prefill).

Its weights are fp32, or the checkpoint's own 4-bit or 8-bit codes where model/engines/codes.py
finds the fp32 weights to be exactly those (SmolLM2's): the same values, a fifth of the bytes.
On a CPU with AVX-512F it computes codes (and fp32 steps of up to 4 rows) on AVX-512 tiles
(kernel512.c), chosen at run time, so one build runs on any AVX2 CPU: over SmolLM2's codes
1.1-1.2x AVX2's at one row and 1.2-2x at 2-32 rows (bench/RESULTS.md, part 9).

Where it runs: Linux on an x86-64 CPU with AVX2, FMA and F16C, with a C compiler (`CC`, else cc or
gcc) and torch on libgomp (its CPU wheels). Elsewhere, or if the build fails,
`library()` is None and model/engines/packing.py keeps oneDNN. The library is built once per
source and compiler flags, into model/engines/build/ when that is writable (the Docker image
builds it there), else the user's cache; a build takes about a second. The same library holds
layer.c, a Llama decoder layer's decode step built on this kernel (model/engines/fused.py).

    lib = library()            # None where it cannot run
    packed = pack(weight)      # the layout kernel.c reads, same bytes as the weight (+ padding)
    layer = linear(lib, packed, bias, in_features, out_features)   # or codes.find(weight)'s
    y = layer(x)               # like F.linear(x, weight, bias)
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernel.c")
# One library: the linear layer, the decoder layer built on it (model/engines/fused.py) and the
# finding of a checkpoint's codes (model/engines/codes.py); the header they share is part of
# what names a build.
SOURCES = tuple(SOURCE.with_name(n) for n in ("kernel.c", "kernel512.c", "layer.c", "codes.c"))
HEADERS = (SOURCE.with_name("kernel.h"),)
FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC")
CPU_FLAGS = ("avx2", "fma", "f16c")
BLOCK_ROWS, LANES = 4, 8  # kernel.c's layout: output rows per block, inputs per register
BF16_GROUP = 32  # inputs per group of W_BF16's layout (kernel.h)
# kernel.h's formats of a packed weight: fp32, 4-bit or 8-bit codes, bf16 (pack_bf16); and the
# flag that has W_Q4 codes multiplied in bf16 arithmetic (kernel512.c; DTYPE=bfloat16)
F32, Q4, Q8, BF16, BF16X = 0, 1, 2, 3, 8
FORMATS = {F32: "fp32", Q4: "q4", Q8: "q8", BF16: "bf16", Q4 | BF16X: "q4"}
# kernel.c's tiles (kernel_isa): AVX2 everywhere; AVX-512's (kernel512.c) for codes and small fp32
# steps, chosen where the CPU has AVX-512F; or AVX-512's for every format and size (for tests:
# codes and fp32 compared on one path)
AVX2, AVX512, AVX512_ALL = 0, 1, 2


class Weights(ctypes.Structure):
    """kernel.h's weights_t: a packed weight's address and format."""

    _fields_ = [("data", ctypes.c_void_p), ("format", ctypes.c_int64)]


_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _dirs() -> list[Path]:
    """Where the library may be: the package's build/ (the Docker image's), else the user's cache
    (none for a user without a home, such as a container's arbitrary uid without HOME)."""
    dirs = [SOURCE.with_name("build")]
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except (RuntimeError, KeyError):
        return dirs
    return [*dirs, cache / "starcoder-playground"]


def _torch_on_libgomp() -> bool:
    """kernel.c's `omp parallel` must land on torch's own team: one libgomp in the process."""
    try:
        with open("/proc/self/maps") as f:
            gomps = {line.split()[-1] for line in f if "libgomp" in line}
    except OSError:
        return False
    return len(gomps) == 1


def library() -> ctypes.CDLL | None:
    """The built and loaded kernel, or None where it cannot run here (logged once)."""
    with _lock:
        if "lib" not in _loaded:
            _loaded["lib"] = _build_and_load()
        return _loaded["lib"]


def _build_and_load() -> ctypes.CDLL | None:
    from model.engines.loading import cpu_flags

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    if not all(f in cpu_flags() for f in CPU_FLAGS):
        log.info("CPU linear kernel off: the CPU lacks %s", "/".join(CPU_FLAGS))
        return None
    if not _torch_on_libgomp():
        log.info("CPU linear kernel off: torch is not on libgomp here")
        return None
    source = b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
    tag = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:16]
    name = f"kernel-{tag}.so"
    for d in _dirs():
        if (d / name).is_file():
            return _load(d / name)
    cc = _compiler()
    if cc is None:
        log.warning("CPU linear kernel off: no C compiler (set CC); oneDNN computes instead")
        return None
    for d in _dirs():
        try:
            d.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=d) as tmp:
                built = Path(tmp) / name
                subprocess.run(
                    [cc, *FLAGS, *map(str, SOURCES), "-lm", "-o", str(built)],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                os.replace(built, d / name)  # atomic: a second process sees all or nothing
            return _load(d / name)
        except OSError:
            continue  # not writable: the next place
        except (subprocess.SubprocessError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            log.warning("CPU linear kernel off: the build failed: %s", str(detail)[-500:])
            return None
    return None


def _load(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        log.warning("CPU linear kernel off: %s", exc)
        return None
    if not _torch_on_libgomp():  # the loader found another libgomp: a second thread team
        log.warning("CPU linear kernel off: it did not share torch's libgomp")
        return None
    lib.linear.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3
    lib.linear.restype = None
    lib.logsumexp_rows.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 2 + [ctypes.c_void_p]
    lib.logsumexp_rows.restype = None
    lib.find_codes.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 3 + [ctypes.c_void_p]
    lib.find_codes.restype = ctypes.c_int64
    lib.kernel_isa.argtypes = [ctypes.c_int64]
    lib.kernel_isa.restype = ctypes.c_int64
    lib.kernel_bf16.argtypes = []
    lib.kernel_bf16.restype = ctypes.c_int64
    log.info("CPU linear kernel: %s", path)
    return lib


def tiles(lib: ctypes.CDLL, mode: int | None = None) -> int:
    """Which tiles kernel.c runs (AVX2, AVX512 or AVX512_ALL); `mode` sets them for the process
    (an AVX-512 mode on a CPU without it gives AVX2)."""
    return lib.kernel_isa(-1 if mode is None else mode)


def label() -> str:
    """How the worker names kernel.c where it reports what computes: "kernel", or "kernel
    avx512" where its AVX-512 tiles run."""
    lib = library()
    return "kernel avx512" if lib is not None and tiles(lib) != AVX2 else "kernel"


def bf16_arithmetic() -> bool:
    """Whether kernel.c computes in bf16 here (pack_bf16's weights, BF16X codes): where it runs
    on a CPU with AVX512-BF16 and AVX512-BW (kernel512.c)."""
    lib = library()
    return lib is not None and bool(lib.kernel_bf16())


def fits(weight: torch.Tensor) -> bool:
    """Whether kernel.c can take this weight: fp32 on CPU, inputs a multiple of 8."""
    return (
        weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and weight.dim() == 2
        and weight.shape[1] % LANES == 0
    )


def pack(weight: torch.Tensor) -> torch.Tensor:
    """The weight [out, in] in kernel.c's layout (a new tensor; the caller may drop the plain)."""
    out, inp = weight.shape
    blocks = -(-out // BLOCK_ROWS)
    if out % BLOCK_ROWS:  # padded with zero rows (a copy; the models here need none)
        padded = weight.new_zeros(blocks * BLOCK_ROWS, inp)
        padded[:out] = weight
        weight = padded
    view = weight.reshape(blocks, BLOCK_ROWS, inp // LANES, LANES)
    return view.permute(0, 2, 1, 3).contiguous()


def pack_bf16(weight: torch.Tensor) -> torch.Tensor:
    """The weight [out, in] rounded to bf16 in kernel.h's W_BF16 layout: per block of 4 output
    rows and 32 inputs, each row's 32 weights in order. `in` must be a multiple of 32."""
    out, inp = weight.shape
    blocks = -(-out // BLOCK_ROWS)
    padded = weight.new_zeros(blocks * BLOCK_ROWS, inp)
    padded[:out] = weight
    view = padded.reshape(blocks, BLOCK_ROWS, inp // BF16_GROUP, BF16_GROUP)
    return view.permute(0, 2, 1, 3).contiguous().to(torch.bfloat16)


def linear(lib: ctypes.CDLL, packed: torch.Tensor, bias, inp: int, out_features: int, fmt=F32):
    """The layer as a function of x [..., inp], like F.linear with this weight (no autograd: for
    inference); `packed` in format `fmt` (pack()'s fp32, or codes.find()'s). Built once per
    layer: a decode step calls ~200 of them, so per call it does only what it must (about 5 us
    beside the kernel's own time; the module around it adds ~2)."""
    fn = lib.linear
    # `packed` and `bias` live as long as the layer that holds them
    weights = Weights(packed.data_ptr(), fmt)
    at = ctypes.addressof(weights)
    bias_at = None if bias is None else bias.data_ptr()
    f32 = torch.float32

    def call(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (inp,):  # as F.linear refuses it: the kernel trusts the sizes it gets
            raise RuntimeError(f"linear: input of shape {tuple(x.shape)}, weight takes {inp}")
        if x.dtype != f32 or not x.is_contiguous():
            x = x.to(f32).contiguous()
        y = torch.empty((*x.shape[:-1], out_features), dtype=f32)
        fn(x.data_ptr(), at, bias_at, y.data_ptr(), x.numel() // inp, inp, out_features)
        return y

    call.inp = inp
    call.holds = (packed, bias)  # the memory behind the addresses, kept alive with `call`
    call.weights = weights  # what layer.c takes for this weight (model/engines/fused.py)
    return call


def logsumexp(x: torch.Tensor) -> torch.Tensor:
    """x.logsumexp(-1), in one C call (layer.c's logsumexp_rows) where the library runs and x
    is fp32 on the CPU without autograd: over a fill's logits (116 x 49,152) 3.6 ms against
    torch's 15.6, at 2 threads."""
    lib = library()
    plain = x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() == 0
    if lib is None or plain or x.numel() == 0 or (x.requires_grad and torch.is_grad_enabled()):
        return x.logsumexp(-1)
    x = x.contiguous()
    out = torch.empty(x.shape[:-1], dtype=torch.float32)
    lib.logsumexp_rows(x.data_ptr(), out.numel(), x.shape[-1], out.data_ptr())
    return out


if __name__ == "__main__":  # the Docker image builds the library at image build time
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(0 if library() is not None else 1)
