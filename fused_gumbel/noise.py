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
    if device.type != "meta" and _functionalizing():
        # fill_gumbel_noise writes into its argument, which
        # torch.func.functionalize refuses in a custom operator; the opaque,
        # functional gumbel_noise_of_seeds runs it below the transform.
        out = gumbel_noise_of_seeds(torch.tensor(seed, dtype=torch.int64, device=device), list(shape))
    else:
        out = _filled_noise(shape, seed, device)
    return out if dtype == torch.float32 else out.to(dtype)


def _filled_noise(shape: Sequence[int] | torch.Size, seed: int, device: torch.device) -> torch.Tensor:
    """gumbel_noise's float32 tensor, written by fill_gumbel_noise."""
    key = "CUDA" if device.type == "cuda" else "CPU"
    if not has_kernel("fill_gumbel_noise", key):
        raise RuntimeError(
            f"fused_gumbel.gumbel_noise: no {key} kernel in this build (device {device}); "
            "build with nvcc available for CUDA"
        )
    out = torch.empty(tuple(shape), dtype=torch.float32, device=device)
    if out.numel() > 0 and device.type != "meta":  # meta: shapes only, as torch's own ops give
        torch.ops.fused_gumbel.fill_gumbel_noise(out, seed)
    return out


def _functionalizing() -> bool:
    """Whether torch.func.functionalize is among the active transforms (in
    eager mode: under torch.compile AOTAutograd functionalizes the write)."""
    if torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active():
        return False
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    functionalize = torch._C._functorch.TransformType.Functionalize
    return any(i.key() == functionalize for i in retrieve_all_functorch_interpreters())


def draw_seed(device: torch.device | str = "cpu") -> torch.Tensor:
    """A 64-bit seed from PyTorch's generator for `device` (so torch.manual_seed
    governs it), as a 0-d int64 tensor there: the seed of seed=None on the
    reference backend (the fused kernels draw theirs without leaving the
    device). Drawn with torch.randint, so that under torch.func.vmap it
    follows vmap's `randomness` ("different": one seed per batch member,
    "same": one for all, "error": torch's error)."""
    bits = torch.randint(0, 1 << 62, (2,), dtype=torch.int64, device=device)
    return (bits[0] << 2) ^ bits[1]  # 64 random bits (wrapping into int64's sign)


@torch.library.custom_op("fused_gumbel::gumbel_noise_of_seeds", mutates_args=())
def gumbel_noise_of_seeds(seeds: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """gumbel_noise for each seed of an int64 tensor (draw_seed's, or under
    vmap a batch of them), on its device: [*seeds.shape, *shape]. An opaque
    operator, so that under torch.compile the seeds are read on the host
    inside the graph, not in a graph break (an error with fullgraph=True),
    and a batch of any size is one node."""
    if seeds.dim() == 0:
        return _filled_noise(shape, int(seeds), seeds.device)
    if seeds.numel() == 0:
        return torch.empty([*seeds.shape, *shape], dtype=torch.float32, device=seeds.device)
    noise = [_filled_noise(shape, seed, seeds.device) for seed in seeds.reshape(-1).tolist()]
    return torch.stack(noise).reshape([*seeds.shape, *shape])


@gumbel_noise_of_seeds.register_fake
def _gumbel_noise_of_seeds_fake(seeds: torch.Tensor, shape: list[int]) -> torch.Tensor:
    return seeds.new_empty([*seeds.shape, *shape], dtype=torch.float32)


@gumbel_noise_of_seeds.register_vmap
def _gumbel_noise_of_seeds_vmap(info, in_dims: tuple, seeds: torch.Tensor, shape: list[int]
                                ) -> tuple[torch.Tensor, int]:
    """A batch of seeds (vmap's randomness="different"): the batch dim first,
    then the op itself, whose output leads with the seeds' dims."""
    return gumbel_noise_of_seeds(seeds.movedim(in_dims[0], 0), shape), 0


def noise_for(shape: Sequence[int] | torch.Size, seed: int | None, device: torch.device) -> torch.Tensor:
    """The float32 noise the reference backend adds: gumbel_noise for a seed,
    gumbel_noise_of_seeds of a drawn seed for None."""
    if seed is None and device.type != "meta":  # (a meta tensor has no seed to draw)
        return gumbel_noise_of_seeds(draw_seed(device), list(shape))
    return gumbel_noise(shape, 0 if seed is None else seed, device=device)
