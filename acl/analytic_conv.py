"""``AnalyticConv2d``: a Conv2d whose kernels are a mosaic of analytic and plain kernels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acl.kernels import _mosaic, family
from acl.spec import Spec, parse_spec

__all__ = ["AnalyticConv2d", "init_akps"]


def init_akps(symbol: str, n: int, kernel_size: tuple[int, int], **factory: Any) -> Tensor:
    """Random AKPs for ``n`` kernels of an analytic family, in natural units.

    Ranges, with ``s = min(h, w)`` (scales proportional to the kernel so that the
    kernels are neither a single spike nor flat over the window):

    ============  ==========================================================
    AKP           initial range
    ============  ==========================================================
    sigma         U(0.2 s, 0.5 s)  (Gabor envelope, LoG, LoT)
    gamma*        U(0.2 s, 0.5 s)  (TGD1st gamma1, gamma2; TGD2nd gamma)
    lambda        U(2, max(3, s))  (at least the Nyquist wavelength)
    theta         U(0, pi) for Gabor and TGD2nd (period pi); U(0, 2 pi) for
                  TGD1st, whose sign flips with theta + pi
    psi           U(-pi, pi)
    ============  ==========================================================

    Uses the global torch RNG, like ``nn.Conv2d``'s initialisation.
    """
    s = min(kernel_size)
    fam = family(symbol)
    if not fam.is_analytic:
        raise ValueError(f"{symbol} has no AKPs to initialise")

    def u(lo: float, hi: float) -> Tensor:
        return torch.empty(n, **factory).uniform_(lo, hi)

    def scale() -> Tensor:
        return u(0.2 * s, 0.5 * s)

    columns = {
        "G": lambda: [u(2.0, max(3.0, s)), u(0, math.pi), u(-math.pi, math.pi), scale()],
        "Lg": lambda: [scale()],
        "Lt": lambda: [scale()],
        "Tf": lambda: [u(0, 2 * math.pi), scale(), scale()],
        "Ts": lambda: [u(0, math.pi), scale()],
        "M": list,
    }[symbol]()
    if not columns:
        return torch.empty(n, 0, **factory)
    return torch.stack(columns, dim=1)


class AnalyticConv2d(nn.Module):
    """Analytic Convolutional Layer: drop-in for ``nn.Conv2d`` with a kernel ``spec``.

    The ``Co x Ci/groups`` kernels are the spec's segments in order, filling the
    kernel grid output-channel major: ``weight.reshape(-1, h, w)[k]`` is the k-th
    kernel of the spec. Each analytic segment owns a ``[n, p]`` parameter of AKPs in
    natural units, named ``akp{i}_{symbol}`` (``i`` = segment index); each Plain
    segment owns a ``[n, h, w]`` parameter ``plain{i}``; Mean segments own nothing.

    ``weight`` is assembled on access (differentiable). In eval mode, when no
    gradient is needed, it is cached and rebuilt only when a parameter changes
    (in-place update, ``load_state_dict``, ``.to()``).

    The canonical spec is saved in the state dict (``_extra_state``); loading a
    checkpoint made with another spec raises a ``ValueError`` naming both.

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
        # nn.Conv2d on the meta device validates the hyper-parameters exactly as
        # PyTorch does and derives the padding bookkeeping, allocating nothing.
        ref = nn.Conv2d(
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
        self.in_channels = ref.in_channels
        self.out_channels = ref.out_channels
        self.kernel_size: tuple[int, int] = ref.kernel_size  # type: ignore[assignment]
        self.stride = ref.stride
        self.padding = ref.padding
        self.dilation = ref.dilation
        self.groups = ref.groups
        self.padding_mode = ref.padding_mode
        self._reversed_padding_repeated_twice = ref._reversed_padding_repeated_twice
        self.spec = parse_spec(spec, in_channels, out_channels, groups=groups)

        factory = {"device": device, "dtype": dtype}
        h, w = self.kernel_size
        fan_in = in_channels // groups * h * w
        bound = 1 / math.sqrt(fan_in)  # nn.Conv2d's default kaiming_uniform(a=sqrt(5)) bound
        self._segment_names: list[str] = []
        self._symbols = tuple(sym for sym, _ in self.spec.segments)
        for i, (sym, n) in enumerate(self.spec.segments):
            if sym == "P":
                name = f"plain{i}"
                self.register_parameter(name, nn.Parameter(torch.empty(n, h, w, **factory).uniform_(-bound, bound)))
            elif sym == "M":
                name = ""
            else:
                name = f"akp{i}_{sym}"
                self.register_parameter(name, nn.Parameter(init_akps(sym, n, self.kernel_size, **factory)))
            self._segment_names.append(name)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        # Tracks device and dtype under .to() even for a layer with no parameters.
        self.register_buffer("_anchor", torch.empty(0, **factory), persistent=False)
        self._cache_key: tuple | None = None
        self._cache: Tensor | None = None

    # -- kernels --------------------------------------------------------------------

    def segment_params(self) -> list[tuple[str, int, int, nn.Parameter | None]]:
        """``(symbol, start, stop, parameter)`` per segment; ``None`` for Mean."""
        return [
            (sym, start, stop, getattr(self, name) if name else None)
            for (sym, start, stop), name in zip(self.spec.offsets(), self._segment_names)
        ]

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

    def _generate(self, shape: tuple[int, ...] | None) -> Tensor:
        # The training hot path: no per-call validation, since the layer made every
        # parameter with the shape its segment needs (load_state_dict keeps them).
        params, anchor = self._parameters, self._anchor
        akps = [
            params[name] if name else anchor.new_empty(n, 0)  # type: ignore[misc]
            for name, (_, n) in zip(self._segment_names, self.spec.segments)
        ]
        return _mosaic(self._symbols, self.kernel_size, akps, shape)

    def _assemble(self) -> Tensor:
        return self._generate((self.out_channels, self.in_channels // self.groups, *self.kernel_size))

    def _params_key(self) -> tuple:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters(recurse=False))

    @property
    def weight(self) -> Tensor:
        """Assembled ``[Co, Ci/groups, h, w]`` kernel tensor."""
        if self.training:
            if self._cache is not None:
                self._cache = self._cache_key = None
            return self._assemble()
        params = list(self.parameters(recurse=False))
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        # Inference tensors (made under torch.inference_mode) have no version counter, so
        # an in-place change to one could not be detected: never cache them.
        if needs_grad or any(p.is_inference() for p in params):
            self._cache = self._cache_key = None
            return self._assemble()
        key = self._params_key()
        if self._cache is None or key != self._cache_key:
            with torch.inference_mode(False), torch.no_grad():
                self._cache = self._assemble()
            self._cache_key = key
        return self._cache

    def forward(self, input: Tensor) -> Tensor:
        weight = self.weight
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(input, weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    # -- checkpoint -------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, str]:
        return {"spec": str(self.spec)}

    def set_extra_state(self, state: Any) -> None:
        saved = state.get("spec") if isinstance(state, dict) else None
        if saved != str(self.spec):
            raise ValueError(f"checkpoint was saved with spec {saved!r}, but this layer has spec {str(self.spec)!r}")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = state["_cache_key"] = None  # never copy or pickle a derived tensor
        return state

    # -- conversion -------------------------------------------------------------------

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, spec: str | Spec) -> AnalyticConv2d:
        """ACL with ``conv``'s hyper-parameters, device and dtype.

        Plain kernels start from ``conv``'s kernels at their positions in the mosaic
        (Fig. 4a) and the bias is copied; analytic kernels start from random AKPs
        (see ``init_akps``).
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
                if sym == "P":
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
