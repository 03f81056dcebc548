"""Weight-only quantized linear layers, written the way gpt-fast writes them.

Decoding one token is bound by reading the weights, so storing them in 8 or 4 bits
should make it faster, not slower.  These modules keep the weights small and
dequantize inside ``forward`` with plain tensor ops; under ``torch.compile`` the
dequantization fuses into the matmul (no bf16 copy of the weight is written), while
in eager mode they still work, just without the speed.  bitsandbytes stays available
for users who ask for ``8bit``/``4bit``; these are ``int8wo``/``int4wo``.

``int8dyn`` is PyTorch's dynamic int8 quantization, a CPU-only option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INT4_GROUP_SIZE = 128


class Int8WeightOnlyLinear(nn.Module):
    """int8 weights with one float scale per output channel (symmetric)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(linear.weight.dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Scaling the output instead of the weight keeps the matmul on the int8 tensor cast
        # to x's dtype, which inductor fuses into one kernel.
        out = F.linear(x, self.weight.to(x.dtype)) * self.scales
        return out if self.bias is None else out + self.bias


class Int4WeightOnlyLinear(nn.Module):
    """4-bit weights, two per byte, with a scale and a minimum per group of input channels."""

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE):
        super().__init__()
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        group_size = min(group_size, in_features)
        if in_features % group_size or group_size % 2:
            raise ValueError(f"in_features {in_features} is not a multiple of the group size {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = weight.reshape(out_features, in_features // group_size, group_size)
        low = groups.amin(dim=2, keepdim=True)
        scales = ((groups.amax(dim=2, keepdim=True) - low) / 15).clamp(min=1e-8)
        codes = torch.round((groups - low) / scales).clamp(0, 15).to(torch.uint8).reshape(out_features, in_features)
        self.register_buffer("packed", codes[:, 0::2] | (codes[:, 1::2] << 4))
        self.register_buffer("scales", scales.squeeze(2).to(linear.weight.dtype))
        self.register_buffer("mins", low.squeeze(2).to(linear.weight.dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        codes = torch.stack([self.packed & 0x0F, self.packed >> 4], dim=2).reshape(self.out_features, -1)
        groups = codes.reshape(self.out_features, -1, self.group_size).to(dtype)
        weight = groups * self.scales[:, :, None].to(dtype) + self.mins[:, :, None].to(dtype)
        return weight.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized(x.dtype), self.bias)


WEIGHT_ONLY = {"int8wo": Int8WeightOnlyLinear, "int4wo": Int4WeightOnlyLinear}


def quantize_weights(model: nn.Module, kind: str, skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (except those named in ``skip``) in place.

    The output projection stays in full precision by default, as bitsandbytes does:
    it is the layer most sensitive to rounding and a small share of the weights.
    """
    if kind == "int8dyn":
        return dynamic_int8(model)
    make = WEIGHT_ONLY[kind]
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and child_name not in skip and full not in skip:
                setattr(module, child_name, make(child))
    return model


def dynamic_int8(model: nn.Module) -> nn.Module:
    """PyTorch's dynamic int8 quantization of the linears (CPU kernels only)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return quantized


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (what decoding reads per token)."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b is not None]
    return sum(t.numel() * t.element_size() for t in tensors)
