"""The Gumbel noise every backend adds, as a tensor."""

from __future__ import annotations

from typing import Sequence

import torch

from ._checks import normalize_seed
from ._extension import has_kernel, require_extension


def gumbel_noise(
    shape: Sequence[int] | torch.Size,
    seed: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The exact Gumbel(0, 1) noise the fused kernels add for `seed`.

    Position p of the result (its flat index, the softmax dim last and
    contiguous) holds gumbel_from_bits(Philox4x32-10 word p % 4 of counter
    p // 4 under key `seed`); the README gives the mapping in full. The values
    are float32 (then cast to `dtype`), always finite, between -3.1300 and
    22.8739 (= 33 log 2).

    Args:
        shape: shape of the noise tensor.
        seed: 64-bit seed (any int, taken modulo 2**64).
        device: where to generate it ("cpu", a CUDA device, or "meta": the
            shape only, as for any meta tensor).
        dtype: dtype of the returned tensor (the noise itself is float32).
    """
    require_extension()
    if not dtype.is_floating_point:
        raise TypeError(f"fused_gumbel.gumbel_noise: dtype must be a floating-point dtype, got {dtype}")
    seed = normalize_seed(seed)
    if seed is None:
        raise TypeError("fused_gumbel.gumbel_noise: seed must be an int")
    device = torch.device(device)
    key = "CUDA" if device.type == "cuda" else "CPU"
    if not has_kernel("fill_gumbel_noise", key):
        raise RuntimeError(
            f"fused_gumbel.gumbel_noise: no {key} kernel in this build (device {device}); "
            "build with nvcc available for CUDA"
        )
    out = torch.empty(tuple(shape), dtype=torch.float32, device=device)
    if out.numel() > 0 and device.type != "meta":  # meta: shapes only, as torch's own ops give
        torch.ops.fused_gumbel.fill_gumbel_noise(out, seed)
    return out if dtype == torch.float32 else out.to(dtype)


def draw_seed(device: torch.device | str = "cpu") -> torch.Tensor:
    """A 64-bit seed from PyTorch's generator for `device` (so torch.manual_seed
    governs it), as a 0-d int64 tensor there: the seed of seed=None on the
    reference backend (the fused kernels draw theirs without leaving the
    device). Drawn with torch.randint, so that under torch.func.vmap it
    follows vmap's `randomness` ("different": one seed per batch member,
    "same": one for all, "error": torch's error)."""
    bits = torch.randint(0, 1 << 62, (2,), dtype=torch.int64, device=device)
    return (bits[0] << 2) ^ bits[1]  # 64 random bits (wrapping into int64's sign)


@torch.library.custom_op("fused_gumbel::gumbel_noise_of_seed", mutates_args=())
def gumbel_noise_of_seed(seed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """gumbel_noise for a seed held in a 0-d int64 tensor (draw_seed's), on
    its device. An opaque operator, so that under torch.compile the seed is
    read on the host inside the graph, not in a graph break (an error with
    fullgraph=True)."""
    return gumbel_noise(shape, int(seed), device=seed.device)


@gumbel_noise_of_seed.register_fake
def _gumbel_noise_of_seed_fake(seed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32, device=seed.device)


@gumbel_noise_of_seed.register_vmap
def _gumbel_noise_of_seed_vmap(info, in_dims: tuple, seed: torch.Tensor, shape: list[int]
                               ) -> tuple[torch.Tensor, int]:
    """A batch of seeds (vmap's randomness="different"): each member's noise
    from its own seed, one call per member, which torch.compile traces for
    the batch size it sees (a host loop over the values would be data
    dependent there)."""
    seeds = seed.movedim(in_dims[0], 0)
    if seeds.shape[0] == 0:
        return torch.empty([0, *shape], dtype=torch.float32, device=seed.device), 0
    return torch.stack([gumbel_noise_of_seed(s, shape) for s in seeds.unbind(0)]), 0


def noise_for(shape: Sequence[int] | torch.Size, seed: int | None, device: torch.device) -> torch.Tensor:
    """The float32 noise the reference backend adds: gumbel_noise for a seed,
    gumbel_noise_of_seed of a drawn seed for None."""
    if seed is None and device.type != "meta":  # (a meta tensor has no seed to draw)
        return gumbel_noise_of_seed(draw_seed(device), list(shape))
    return gumbel_noise(shape, 0 if seed is None else seed, device=device)
