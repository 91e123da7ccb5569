"""Linear layers with their weights packed once, on CPU (imports torch): for kernel.c where it
runs (fp32, AVX2 + FMA, a C compiler; model/engines/kernel.py), else for oneDNN.

A decode step is a handful of rows times every weight matrix. With a plain weight, each
`F.linear` call has BLAS re-pack the weight into its kernel's layout first, which reads it twice
per call; oneDNN's inner product takes a weight reordered into that layout once, at load. On the
2-core AVX2 machine of bench/RESULTS.md ("Packed weights"), at 8 rows: SmolLM2's MLP projection
0.51 -> 0.30 ms, its 49,152-row output layer 31 -> 8.3 ms; at 1 row about the same as plain.
kernel.c then read the weights 1.1-2.8x faster than oneDNN at 1-32 rows and about as fast at
hundreds (bench/RESULTS.md, "Engine speed on CPU, part 5").

Each packed layer drops its plain weight, so memory stays about the same, except where the
weight is shared (a tied output layer reads the input embedding, which a lookup needs in plain
form): that one is kept and packed too. Where the fp32 weights are exactly a checkpoint's 4-bit
or 8-bit codes (SmolLM2's; model/engines/codes.py), kernel.c reads those: the same results,
and SmolLM2's packed weights take 96 MB instead of 538.

Prompts on AMX (`prompts=True`, where loading.py's DTYPE=auto picks it): a layer on kernel.c
also holds a bf16 copy for oneDNN, which computes more than PROMPT_ROWS rows on the CPU's AMX
tiles (a prompt, a fill's scoring): ~5x kernel.c's fp32 there (bench/RESULTS.md, part 8),
while decode steps stay on kernel.c's exact fp32. SmolLM2: 270 MB more.
"""

from __future__ import annotations

import logging

import torch

from model.engines import codes, hugepages, kernel

log = logging.getLogger(__name__)

# dtypes oneDNN's CPU inner product takes; bf16 only where the CPU computes it natively
# (model/engines/loading.py picks bf16 only there unless DTYPE forces it).
PACKED_DTYPES = (torch.float32, torch.bfloat16)
# Rows from which a layer with a bf16 copy computes on it: above a decode step of 32 streams
# (model/engines/fused.py's MAX_ROWS), so that every decode step stays on kernel.c.
PROMPT_ROWS = 33


class PackedLinear(torch.nn.Module):
    """`nn.Linear`'s forward over a packed weight (same values, same results up to the order of
    the additions): kernel.c's layout when `use_kernel` and it runs here (the checkpoint's codes
    where they are exact and `use_codes`), else oneDNN's. `bf16`: kernel.c computes in bf16
    where the CPU has AVX512-BF16 (x rounded to bf16; weights that are not codes stored as
    bf16)."""

    def __init__(
        self,
        linear: torch.nn.Linear,
        use_kernel: bool = True,
        use_codes: bool = True,
        prompts: bool = False,
        bf16: bool = False,
    ):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach().contiguous()
        lib = kernel.library() if use_kernel and kernel.fits(weight) else None
        self._kernel = None  # kernel.c's call for this layer, which holds its weight and bias
        self.format = None  # kernel.c's format of `packed` (kernel.FORMATS), None on oneDNN
        if lib is not None:
            found = codes.find(weight) if use_codes else None
            # bf16 arithmetic (DTYPE=bfloat16): Q4 codes as they are, other weights as bf16; Q8
            # codes (an output layer) stay exact fp32, see kernel512.c
            bf16 = bf16 and kernel.bf16_arithmetic() and self.in_features % kernel.BF16_GROUP == 0
            if found:
                in_bf16 = kernel.BF16X if bf16 and found.format == kernel.Q4 else 0
                self.packed, self.format = found.packed, found.format | in_bf16
            elif bf16:
                self.packed, self.format = kernel.pack_bf16(weight), kernel.BF16
            else:
                self.packed, self.format = kernel.pack(weight), kernel.F32
            bias = linear.bias
            bias = None if bias is None else bias.detach().float().contiguous()
            self._kernel = kernel.linear(
                lib, self.packed, bias, self.in_features, self.out_features, self.format
            )
        else:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        # the bf16 copy oneDNN computes prompts with (see above); None without one
        self.prompt_weight = None
        if prompts and self._kernel is not None:
            self.prompt_weight = torch.ops.mkldnn._reorder_linear_weight(weight.bfloat16(), None)
        self.bias = linear.bias  # a Parameter or None, used as is

    @property
    def bf16(self) -> bool:
        """Whether kernel.c computes this layer in bf16 arithmetic (its format says so)."""
        return self.format is not None and (
            self.format == kernel.BF16 or bool(self.format & kernel.BF16X)
        )

    @property
    def backend(self) -> str:
        return "kernel" if self._kernel is not None else "onednn"

    @property
    def kernel_bias(self) -> torch.Tensor | None:
        """The fp32 bias kernel.c adds (layer.c reads it too); None without one or off kernel.c."""
        return None if self._kernel is None else self._kernel.holds[1]

    @property
    def kernel_weights(self):
        """The kernel.Weights layer.c reads for this layer; None off kernel.c."""
        return None if self._kernel is None else self._kernel.weights

    def rehome(self, packed: torch.Tensor) -> None:
        """kernel.c reads its weight from `packed` from now on: a copy of `self.packed` (on 2 MB
        pages, model/engines/hugepages.py). Before layer.c takes the address (fused.py)."""
        lib = kernel.library()
        self.packed = packed
        self._kernel = kernel.linear(
            lib, packed, self.kernel_bias, self.in_features, self.out_features, self.format
        )

    def on_copy(self, xb: torch.Tensor) -> torch.Tensor:
        """The layer of bf16 rows `xb` on its bf16 copy (oneDNN, AMX), as fp32 plus the bias
        (fused.py's prompt path hands one bf16 copy of its rows to several layers)."""
        y = torch.ops.mkldnn._linear_pointwise(xb, self.prompt_weight, None, "none", [], "")
        return y.float() if self.bias is None else y.float().add_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prompt_weight is not None and x.numel() >= PROMPT_ROWS * self.in_features:
            return self.on_copy(x.bfloat16())
        if self._kernel is not None:
            return self._kernel(x)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    @property
    def packed_bytes(self) -> int:
        """Bytes of the packed weight and its bf16 copy, if any."""
        return self.packed.numel() * self.packed.element_size() + self.prompt_bytes

    @property
    def prompt_bytes(self) -> int:
        """Bytes of the bf16 copy only prompts read (0 without one)."""
        copy = self.prompt_weight
        return 0 if copy is None else copy.numel() * copy.element_size()

    def extra_repr(self) -> str:
        held = f" {kernel.FORMATS[self.format]}" if self._kernel is not None else ""
        held += " in bf16" if self.bf16 and self.format != kernel.BF16 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.backend}{held}"


def can_pack(model) -> bool:
    """Whether this build of torch has oneDNN and the model's dtype is one it packs."""
    return (
        torch.backends.mkldnn.is_available()
        and model.device.type == "cpu"
        and model.dtype in PACKED_DTYPES
    )


def pack_linears(
    model,
    use_kernel: bool = True,
    use_codes: bool = True,
    prompts: bool = False,
    bf16: bool = False,
) -> int:
    """Replace every `nn.Linear` of `model` by a PackedLinear; returns how many were packed.
    `use_kernel=False` keeps oneDNN everywhere (bench/cpu_decode.py compares the two);
    `use_codes=False` keeps fp32 weights where codes would do (bench/cpu_decode.py again);
    `prompts`: bf16 copies for prompts, on AMX (above); `bf16`: kernel.c's bf16 arithmetic
    where the CPU has it (kernel.bf16_arithmetic(); DTYPE=bfloat16, model/engines/loading.py).

    Checked on the first layer: if the packed layer fails or disagrees with `F.linear`, nothing
    is replaced and the model runs as loaded."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, torch.nn.Linear)
    ]
    if not targets or not can_pack(model):
        return 0
    first = targets[0][2]
    try:
        packed = PackedLinear(first, use_kernel, use_codes, prompts, bf16)
        same = True
        # a decode step's rows, and a prompt's (bf16 arithmetic or a bf16 copy: ~3 digits)
        step_tol = 5e-2 if packed.bf16 else 1e-2
        prompt_tol = 1e-2 if packed.prompt_weight is None and not packed.bf16 else 5e-2
        for rows, tol in ((3, step_tol), (PROMPT_ROWS, prompt_tol)):
            probe = torch.randn(rows, first.in_features, dtype=first.weight.dtype)
            with torch.inference_mode():
                got, want = packed(probe).float(), first(probe).float()
            same = same and torch.allclose(got, want, rtol=tol, atol=tol * want.abs().max())
    except RuntimeError as exc:  # a torch built without the op for this CPU or dtype
        if prompts:  # oneDNN's bf16 may be what failed: the layers without the copies
            log.warning("no bf16 copies for prompts here (%s)", exc)
            return pack_linears(model, use_kernel, use_codes, prompts=False, bf16=bf16)
        log.warning("cannot pack this model's linear layers (%s): left as loaded", exc)
        return 0
    if not same:
        if prompts:
            log.warning("the bf16 copies disagree with F.linear here: packed without them")
            return pack_linears(model, use_kernel, use_codes, prompts=False, bf16=bf16)
        if packed.bf16:
            log.warning("kernel.c's bf16 arithmetic disagrees with F.linear here: fp32 instead")
            return pack_linears(model, use_kernel, use_codes, prompts)
        log.warning("the %s linear disagrees with F.linear here: left as loaded", packed.backend)
        return 0
    layers = []
    for parent, name, child in targets:  # the probed first layer is used as it is
        layer = (
            packed if child is first else PackedLinear(child, use_kernel, use_codes, prompts, bf16)
        )
        setattr(parent, name, layer)
        layers.append(layer)
    onto_huge_pages(layers)
    return len(targets)


def onto_huge_pages(layers: list[PackedLinear]) -> None:
    """kernel.c's weights, which every decode step streams, copied side by side onto 2 MB pages
    where the system has them (model/engines/hugepages.py); the 4 KB-page originals go."""
    ours = [m for m in layers if m.backend == "kernel"]
    copies = hugepages.copy_in([m.packed for m in ours])
    if copies is not None:  # else where they are: no huge pages here
        for layer, copy in zip(ours, copies, strict=True):
            layer.rehome(copy)
        hugepages.return_freed()


def packed_backend(model) -> str:
    """What computes the model's packed layers: "kernel", "onednn", or both ("kernel+onednn":
    kernel.c takes only the fp32 weights whose inputs are a multiple of 8); "kernel avx512" where
    its AVX-512 tiles run, "bf16" where it computes in bf16 (PackedLinear.bf16), with the codes
    it reads where any are ("kernel (q4+q8)": SmolLM2's), and "on 2 MB pages" where its weights
    are (onto_huge_pages)."""
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    found = {m.backend for m in packed}
    held = {kernel.FORMATS[m.format] for m in packed if m.format is not None} - {"fp32", "bf16"}
    ours = kernel.label() + (" bf16" if computes_in_bf16(model) else "")
    codes = f" ({'+'.join(sorted(held))})" if held else ""
    found = {f"{ours}{codes}" if b == "kernel" else b for b in found}
    name = "+".join(sorted(found, reverse=True)) or "plain"
    streamed = [m.packed for m in packed if m.backend == "kernel"]
    if streamed and hugepages.huge_bytes(streamed[0]):
        name += " on 2 MB pages"
    prompts = any(m.prompt_weight is not None for m in packed)
    return f"{name}; prompts: onednn bf16" if prompts else name


def computes_in_bf16(model) -> bool:
    """Whether kernel.c computes any of the model's packed layers in bf16 (PackedLinear.bf16)."""
    return any(m.bf16 for m in model.modules() if isinstance(m, PackedLinear))


def weight_bytes(model) -> int:
    """Bytes the model's weights hold: parameters, buffers and packed copies, each once."""
    tensors = {id(t): t.nbytes for t in (*model.parameters(), *model.buffers())}
    packed = sum(m.packed_bytes for m in model.modules() if isinstance(m, PackedLinear))
    return sum(tensors.values()) + packed
