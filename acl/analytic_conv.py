"""``AnalyticConv2d``: a Conv2d whose kernels are a mosaic of analytic and plain kernels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acl.families import FAMILIES, pair
from acl.fixed_families import fixed_kernels
from acl.kernels import init_akps, unchecked_mosaic
from acl.spec import Spec, parse_spec

__all__ = ["AnalyticConv2d"]


def _mosaic(
    symbols: tuple[str, ...], kernel_size: tuple[int, int], counts: list[int], anchor: Tensor, params: list
) -> Tensor:
    """``unchecked_mosaic`` of a layer's segment parameters; a Mean segment (``None``) gets an empty AKP bank.

    A module-level function so that ``torch.fx.symbolic_trace`` records it as one
    call fed with the layer's parameters (``torch.fx.wrap`` below): the traced
    module then generates its kernels from the AKPs of the moment it runs, and no
    generated tensor is stored as a constant on the traced module (fx stores such
    constants on the *original* module too, which then could not be deep-copied).
    """
    akps = [anchor.new_empty(n, 0) if p is None else p for p, n in zip(params, counts)]
    return unchecked_mosaic(symbols, kernel_size, akps)


torch.fx.wrap("_mosaic")


def _meta_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
    padding_mode: str,
) -> nn.Conv2d:
    """An ``nn.Conv2d`` on the meta device: it validates the hyper-parameters exactly as
    PyTorch does and derives the padding bookkeeping, allocating nothing."""
    try:
        return nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            False,
            padding_mode,
            device="meta",
        )
    except ValueError as e:
        # nn.Conv2d names the rule broken ("in_channels must be divisible by groups"), not the values given
        raise ValueError(
            f"{e}; got in_channels={in_channels}, out_channels={out_channels}, kernel_size={kernel_size}, "
            f"stride={stride}, padding={padding!r}, dilation={dilation}, groups={groups}, padding_mode={padding_mode!r}"
        ) from None


def _fx_tracing() -> bool:
    """Inside ``torch.fx.symbolic_trace`` (torch.export and torch.compile trace with real or fake tensors instead)."""
    return torch.fx._symbolic_trace._is_fx_tracing_flag and not torch.compiler.is_compiling()


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or _fx_tracing()


def _saved_tensors_hooked() -> bool:
    """Inside ``saved_tensors_hooks`` (non-reentrant activation checkpointing, ``save_on_cpu``).

    There a layer generates its own weight rather than use the one its model's
    forward hook generated outside the region: checkpointing recomputes the region
    alone and checks that it saves the same tensors as the first pass did.
    """
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is not None and top(False) is not None


class AnalyticConv2d(nn.Module):
    """Analytic Convolutional Layer: drop-in for ``nn.Conv2d`` with a kernel ``spec``.

    The ``Co x Ci/groups`` kernels are the spec's segments in order, filling the
    kernel grid output-channel major: ``weight.reshape(-1, h, w)[k]`` is the k-th
    kernel of the spec. Each analytic segment owns a ``[n, p]`` parameter of AKPs in
    natural units, named ``akp{i}_{symbol}`` (``i`` = segment index); each Plain
    segment owns a ``[n, h, w]`` parameter ``plain{i}``; Mean segments own nothing.
    A segment of a fixed family (``D``, ``H``, ``S``, ``O``, ``U``; ``acl.fixed_kernels``)
    owns a ``[n, h, w]`` *buffer* ``fixed{i}_{symbol}``, drawn from the global RNG when
    the layer is built: saved in the state dict, never a parameter, so never learned
    nor seen by an optimizer. ``from_conv`` fills ``U`` (Unchanged) segments with the
    replaced convolution's own kernels.

    ``weight`` is generated on access (differentiable, one ``acl.kernels`` mosaic).
    In eval mode, when no gradient is needed, the analytic kernels are reused
    while every AKP tensor equals (``torch.equal``) the copy they were made from,
    so an in-place edit, ``load_state_dict``, ``.to()`` or an optimizer step is
    always seen; plain kernels are always read fresh.

    The canonical spec is saved in the state dict (``_extra_state``); loading a
    checkpoint made with another spec raises a ``ValueError`` naming both.

    ``compile_generator`` (default False; ``acl.compile_generators(model)`` sets it
    on every ACL) generates the weight with ``acl.compiled_kernels``, one compiled
    graph and its compiled backward, whenever the weight is generated for autograd
    outside tracing: 2-3x less generation time in training, no double backward
    (docs/acl.md).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
        bias, padding_mode, device, dtype: as ``nn.Conv2d``.
        spec: arrangement spec (count or ratio form, see ``acl.spec``) or a ``Spec``.

    Shape:
        - Input: :math:`(B, C_i, H, W)`
        - Output: :math:`(B, C_o, H', W')`, as ``nn.Conv2d``.

    Examples:
        >>> layer = AnalyticConv2d(3, 64, 7, spec="G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5", padding=3)
        >>> str(layer.spec), layer.weight.shape
        ('(3x64)G30Lg15Lt15Tf36P96', torch.Size([64, 3, 7, 7]))
        >>> layer(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 64, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        spec: str | Spec,
    ) -> None:
        super().__init__()
        self.compile_generator = False
        self._pregenerated: Tensor | None = None  # this forward's weight, from acl.compiled_training's hook
        pair(kernel_size)  # a zero or negative size: a ValueError naming it (nn.Conv2d accepts 0)
        self._take_geometry(
            _meta_conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode)
        )
        self.spec = parse_spec(spec, in_channels, out_channels, groups=groups)

        factory = {"device": device, "dtype": dtype}
        h, w = self.kernel_size
        bound = 1 / math.sqrt(in_channels // groups * h * w)  # nn.Conv2d's default kaiming_uniform(a=sqrt(5)) bound
        self._register_segments(factory)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        # Tracks device and dtype under .to() even for a layer with no parameters.
        self.register_buffer("_anchor", torch.empty(0, **factory), persistent=False)
        # the segments the cache holds
        self._analytic = [i for i, sym in enumerate(self._symbols) if not FAMILIES[sym].stores_kernels]
        self._cache: tuple[list[Tensor], list[Tensor]] | None = None  # (AKP copies, their kernels)

    def _take_geometry(self, ref: nn.Conv2d) -> None:
        """``nn.Conv2d``'s hyper-parameters, as the reference convolution validated and normalised them."""
        self.in_channels = ref.in_channels
        self.out_channels = ref.out_channels
        self.kernel_size: tuple[int, int] = ref.kernel_size  # type: ignore[assignment]
        self.stride = ref.stride
        self.padding = ref.padding
        self.dilation = ref.dilation
        self.groups = ref.groups
        self.padding_mode = ref.padding_mode

    def _register_segments(self, factory: dict[str, Any]) -> None:
        """A tensor per segment, in spec order: ``plain{i}`` and ``akp{i}_{symbol}`` parameters, ``fixed{i}_{symbol}`` buffers."""
        self._symbols = tuple(sym for sym, _ in self.spec.segments)
        self._segment_names = [self._add_segment(i, sym, n, factory) for i, (sym, n) in enumerate(self.spec.segments)]

    def _add_segment(self, i: int, sym: str, n: int, factory: dict[str, Any]) -> str:
        """Register segment ``i``'s tensor (parameter, or buffer for a fixed family); its name, ``""`` for Mean."""
        h, w = self.kernel_size
        fan_in = self.in_channels // self.groups * h * w
        if sym == "M":
            return ""
        if sym == "P":
            bound = 1 / math.sqrt(fan_in)
            self.register_parameter(f"plain{i}", nn.Parameter(torch.empty(n, h, w, **factory).uniform_(-bound, bound)))
            return f"plain{i}"
        if FAMILIES[sym].fixed:
            self.register_buffer(f"fixed{i}_{sym}", fixed_kernels(sym, n, (h, w), fan_in=fan_in, **factory))
            return f"fixed{i}_{sym}"
        self.register_parameter(f"akp{i}_{sym}", nn.Parameter(init_akps(sym, n, self.kernel_size, **factory)))
        return f"akp{i}_{sym}"

    # -- kernels --------------------------------------------------------------------

    def segment_params(self) -> list[tuple[str, int, int, Tensor | None]]:
        """``(symbol, start, stop, tensor)`` per segment: a parameter, a buffer for a fixed family, ``None`` for Mean."""
        return [
            (sym, start, stop, getattr(self, name) if name else None)
            for (sym, start, stop), name in zip(self.spec.offsets(), self._segment_names)
        ]

    def segment_names(self) -> list[str]:
        """The state-dict name of each segment's tensor (``akp0_G``, ``plain1``, ``fixed2_D``); ``""`` for Mean."""
        return list(self._segment_names)

    def akps(self) -> dict[str, Tensor]:
        """AKPs of every analytic segment by parameter name (natural units)."""
        return {name: getattr(self, name) for name in self._segment_names if name.startswith("akp")}

    def _factory(self) -> dict[str, Any]:
        return {"dtype": self._anchor.dtype, "device": self._anchor.device}

    def kernels(self) -> Tensor:
        """All kernels in spec order, freshly generated.

        Shape:
            - Output: :math:`(C_o C_i / groups, h, w)`
        """
        return self._generate(None)

    def _generate(self, shape: tuple[int, ...] | None, compiled: bool = False) -> Tensor:
        # The training hot path: no per-call validation, since the layer made every
        # parameter with the shape its segment needs (load_state_dict keeps them).
        if compiled:
            from acl.compiled_kernels import compiled_mosaic  # torch.compile is imported only by those who use it

            kernels = compiled_mosaic(self._symbols, self.kernel_size, self._segment_tensors())
            return kernels if shape is None else kernels.view(shape)
        names, counts = self._segment_names, [n for _, n in self.spec.segments]
        if _fx_tracing():  # getattr: fx hands out its proxies of the parameters, so the graph reads them at run time
            params = [getattr(self, name) if name else None for name in names]
        else:
            params = [self._segment_tensor(name) if name else None for name in names]
        kernels = _mosaic(self._symbols, self.kernel_size, counts, self._anchor, params)
        return kernels if shape is None else kernels.view(shape)

    def _segment_tensor(self, name: str) -> Tensor:
        # Direct dictionary reads: the hot path of every training step (getattr goes through nn.Module.__getattr__).
        found = self._parameters.get(name)
        return self._buffers[name] if found is None else found  # type: ignore[return-value]

    def _segment_tensors(self) -> list[Tensor]:
        anchor = self._anchor
        return [
            self._segment_tensor(name) if name else anchor.new_empty(n, 0)
            for name, (_, n) in zip(self._segment_names, self.spec.segments)
        ]

    def _assemble(self, compiled: bool = False) -> Tensor:
        return self._generate((self.out_channels, self.in_channels // self.groups, *self.kernel_size), compiled)

    def _cached_weight(self) -> Tensor:
        """Eval-mode weight: analytic kernels from the cache while their AKPs are unchanged, plain kernels fresh."""
        tensors = self._segment_tensors()
        if not self._analytic:  # plain kernels only: nothing to generate
            return self._assemble()
        akps = [tensors[i] for i in self._analytic]
        cache = self._cache
        if cache is None or not all(
            c.dtype == a.dtype and c.device == a.device and torch.equal(c, a) for c, a in zip(cache[0], akps)
        ):
            with torch.inference_mode(False), torch.no_grad():
                kernels = unchecked_mosaic([self._symbols[i] for i in self._analytic], self.kernel_size, akps)
                counts = [self.spec.segments[i][1] for i in self._analytic]
                cache = self._cache = ([a.clone() for a in akps], list(kernels.split(counts)))
        for i, part in zip(self._analytic, cache[1]):
            tensors[i] = part
        return torch.cat(tensors).view(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _weight_source(self) -> str:
        """How ``weight`` is made now: ``compiled``, ``fresh`` (eager) or ``cached`` (eval, no grad)."""
        params = [p for p in self._parameters.values() if p is not None]
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        # The cache serves only the layer's own parameters: tensors swapped in by
        # torch.func.functional_call (batched under vmap, say) are generated fresh.
        own = all(isinstance(p, nn.Parameter) for p in params)
        tracing = _tracing()
        if self.compile_generator and needs_grad and own and not tracing:
            return "compiled"
        return "fresh" if self.training or needs_grad or not own or tracing else "cached"

    @property
    def weight(self) -> Tensor:
        """Generated ``[Co, Ci/groups, h, w]`` kernel tensor."""
        source = self._weight_source()
        if source == "cached":
            return self._cached_weight()
        if self._cache is not None:
            self._cache = None
        if source == "compiled" and self._pregenerated is not None and not _saved_tensors_hooked():
            return self._pregenerated
        return self._assemble(source == "compiled")

    def _padding_amounts(self) -> list[int]:
        """``F.pad`` amounts (last dimension first) of ``padding`` for a non-zero ``padding_mode``, as nn.Conv2d."""
        out: list[int] = []
        for i in (1, 0):
            if self.padding == "same":
                total = self.dilation[i] * (self.kernel_size[i] - 1)
                out += [total // 2, total - total // 2]
            else:
                out += [0, 0] if self.padding == "valid" else [self.padding[i]] * 2
        return out

    def forward(self, input: Tensor) -> Tensor:
        weight = self.weight
        if self.padding_mode != "zeros":
            input = F.pad(input, self._padding_amounts(), mode=self.padding_mode)
            return F.conv2d(input, weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    # -- checkpoint -------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, str]:
        return {"spec": str(self.spec)}

    def set_extra_state(self, state: Any) -> None:
        saved = state.get("spec") if isinstance(state, dict) else None
        if not self._same_spec(saved):
            raise ValueError(f"checkpoint was saved with spec {saved!r}, but this layer has spec {str(self.spec)!r}")

    def _same_spec(self, saved: Any) -> bool:
        # Compared parsed: a grouped layer's spec saved before its prefix showed the kernel bank still matches.
        try:
            spec = parse_spec(saved, self.in_channels, self.out_channels, groups=self.groups)
        except (TypeError, ValueError):  # not a string, or not a spec of this layer
            return False
        return spec == self.spec

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = state["_pregenerated"] = None  # never copy or pickle a derived tensor
        return state

    # -- conversion -------------------------------------------------------------------

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, spec: str | Spec) -> AnalyticConv2d:
        """ACL with ``conv``'s hyper-parameters, device and dtype.

        Plain kernels start from ``conv``'s kernels at their positions in the mosaic
        (Fig. 4a) and the bias is copied; analytic kernels start from random AKPs
        (see ``init_akps``). Unchanged (``U``) kernels are ``conv``'s kernels at their
        positions, fixed from then on; the other fixed families are drawn as usual.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv expects an nn.Conv2d, got {type(conv).__name__}")
        w = conv.weight
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=w.device,
            dtype=w.dtype,
            spec=spec,
        )
        flat = w.detach().reshape(-1, *layer.kernel_size)
        with torch.no_grad():
            for sym, start, stop, param in layer.segment_params():
                if sym in ("P", "U"):
                    param.copy_(flat[start:stop])
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        layer.train(conv.training)
        return layer

    def to_conv(self) -> nn.Conv2d:
        """Deploy form: an ``nn.Conv2d`` holding the generated kernels (a copy)."""
        fac = self._factory()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.bias is not None,
            self.padding_mode,
            **fac,
        )
        with torch.no_grad():
            conv.weight.copy_(self._assemble())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        conv.train(self.training)
        return conv

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + f", spec='{self.spec}'"
