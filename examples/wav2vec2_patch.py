"""Hugging Face's Wav2Vec2ForPreTraining trained with fused_gumbel.patch().

The model's quantizer calls ``nn.functional.gumbel_softmax(..., hard=True)``;
under ``fg.patch()`` that call runs the fused kernel, with no change to
transformers' code. The model here is tiny and randomly initialised (nothing is
downloaded); the audio is noise.

    python examples/wav2vec2_patch.py            # train 20 steps, then the noise check
    python examples/wav2vec2_patch.py --steps 5

Two things are shown:

1. Training under the patch: the loss is finite and falls, every parameter that
   takes part gets a gradient and moves.
2. Same noise, same codevectors: the unpatched model, with the noise of its
   ``F.gumbel_softmax`` call made the noise ``fg.gumbel_noise`` gives for a seed,
   quantizes to the same codevectors (and the same perplexity, hence diversity
   loss) as the patched model with ``fg.patch(seed=...)``.
   ``F.gumbel_softmax`` draws its noise as ``-log(E)`` with
   ``E = torch.empty_like(logits).exponential_()``; ``original_fed_noise``
   makes that draw return ``exp(-g)``, so the original adds ``g`` (to rounding).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Iterator, NamedTuple

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

import fused_gumbel as fg


def tiny_config(**overrides) -> Wav2Vec2Config:
    """A Wav2Vec2 small enough to train on a CPU in seconds; dropout off so
    that the only randomness in a forward pass is the Gumbel noise."""
    settings = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3), conv_bias=True,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        num_codevector_groups=2, num_codevectors_per_group=16, codevector_dim=32,
        proj_codevector_dim=16, num_negatives=10, diversity_loss_weight=0.1,
        hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
        feat_quantizer_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
        # kept > 0 only so the model creates its mask embedding; the masks are passed in
        mask_time_prob=0.05,
    )
    settings.update(overrides)
    return Wav2Vec2Config(**settings)


def tiny_model(seed: int = 0, **overrides) -> Wav2Vec2ForPreTraining:
    torch.manual_seed(seed)
    return Wav2Vec2ForPreTraining(tiny_config(**overrides)).train()


class Batch(NamedTuple):
    input_values: torch.Tensor              # [batch, samples] float32 audio
    mask_time_indices: torch.Tensor         # [batch, frames] bool, the masked frames
    sampled_negative_indices: torch.Tensor  # [batch, frames, num_negatives] int64 into batch * frames


def make_batch(model: Wav2Vec2ForPreTraining, batch_size: int = 2, samples: int = 1600,
               mask_prob: float = 0.5, mask_length: int = 2, seed: int = 0) -> Batch:
    """Random audio, masked spans and negatives, drawn once so that every run
    (patched or not) sees the same batch. Negatives of a masked frame are other
    masked frames of the same utterance, drawn uniformly (as wav2vec 2.0 does)."""
    gen = torch.Generator().manual_seed(seed)
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(samples)))
    input_values = torch.randn(batch_size, samples, generator=gen)
    starts = torch.rand(batch_size, frames, generator=gen) < mask_prob / mask_length
    mask = starts.clone()
    for shift in range(1, mask_length):
        mask[:, shift:] |= starts[:, :-shift]
    mask[:, :2] = True  # at least two masked frames per utterance, so negatives exist
    num_negatives = model.config.num_negatives
    negatives = torch.zeros(batch_size, frames, num_negatives, dtype=torch.long)
    for b in range(batch_size):
        masked = mask[b].nonzero().squeeze(-1)
        n = masked.numel()
        # a uniform draw among the other n - 1 masked frames: skip over the frame itself
        pick = torch.randint(0, n - 1, (n, num_negatives), generator=gen)
        pick += (pick >= torch.arange(n)[:, None]).long()
        negatives[b, masked] = masked[pick] + b * frames
        negatives[b, ~mask[b]] = b * frames
    return Batch(input_values, mask, negatives)


def forward(model: Wav2Vec2ForPreTraining, batch: Batch):
    return model(batch.input_values, mask_time_indices=batch.mask_time_indices,
                 sampled_negative_indices=batch.sampled_negative_indices)


def train(steps: int = 20, seed: int = 0, lr: float = 3e-3, log_every: int = 5, **batch_args) -> dict:
    """Trains the tiny model for `steps` Adam steps under fg.patch() on one fixed
    batch; returns the losses and the parameters before and after."""
    model = tiny_model(seed)
    batch = make_batch(model, seed=seed, **batch_args)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses, grads_seen = [], set()
    start = time.perf_counter()
    with fg.patch():
        for step in range(steps):
            model.set_gumbel_temperature(max(0.5, 2.0 * 0.95**step))
            optimizer.zero_grad()
            loss = forward(model, batch).loss
            loss.backward()
            grads_seen |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
            optimizer.step()
            losses.append(loss.item())
            if log_every and (step % log_every == 0 or step == steps - 1):
                print(f"step {step:3d}  loss {losses[-1]:9.3f}  tau {model.quantizer.temperature:.3f}")
    return dict(losses=losses, seconds=time.perf_counter() - start, model=model, before=before,
                grads_seen=grads_seen)


@contextlib.contextmanager
def original_fed_noise(seed: int) -> Iterator[list]:
    """Within the block, ``Tensor.exponential_`` fills a tensor of shape S with
    ``exp(-fg.gumbel_noise(S, seed + n))`` at its n-th call, so the unpatched
    ``F.gumbel_softmax`` (noise ``-log(E)``) adds the noise that
    ``fg.patch(seed=seed)`` adds at its n-th call. Yields the list of shapes drawn."""
    original = torch.Tensor.exponential_
    drawn: list = []

    def exponential_(self, lambd=1.0, *, generator=None):
        g = fg.gumbel_noise(self.shape, seed + len(drawn), device=self.device)
        drawn.append(tuple(self.shape))
        with torch.no_grad():
            return self.copy_(torch.exp(-g.double()) / lambd)

    torch.Tensor.exponential_ = exponential_
    try:
        yield drawn
    finally:
        torch.Tensor.exponential_ = original


def quantize(model: Wav2Vec2ForPreTraining, batch: Batch):
    """Runs the whole model and returns the quantizer's output (codevectors
    [batch, frames, codevector_dim], perplexity) and the model's output."""
    captured = {}
    hook = model.quantizer.register_forward_hook(lambda module, args, out: captured.update(out=out))
    try:
        output = forward(model, batch)
    finally:
        hook.remove()
    codevectors, perplexity = captured["out"]
    return codevectors, perplexity, output


def compare_with_original(seed: int = 1234, model_seed: int = 0, **batch_args) -> dict:
    """The patched model with fg.patch(seed=seed) against the unpatched model
    fed the same noise: codevectors, code indices, perplexity, losses and the
    gradients of one backward pass."""
    model = tiny_model(model_seed)
    batch = make_batch(model, seed=model_seed, **batch_args)
    runs = {}
    for name in ("original", "patched"):
        model.zero_grad()
        patch = fg.patch(seed=seed) if name == "patched" else original_fed_noise(seed)
        with patch as state:
            codevectors, perplexity, output = quantize(model, batch)
            output.loss.backward()
        runs[name] = dict(
            codevectors=codevectors.detach(), perplexity=perplexity.detach(),
            diversity=output.diversity_loss.detach(), contrastive=output.contrastive_loss.detach(),
            grads={n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            noise_draws=list(state) if name == "original" else state.calls,
        )
    original, patched = runs["original"], runs["patched"]
    codebook = model.quantizer.codevectors.detach()  # [1, groups * vars, codevector_dim / groups]
    return dict(runs=runs, codebook=codebook, groups=model.config.num_codevector_groups,
                max_codevector_diff=(original["codevectors"] - patched["codevectors"]).abs().max().item())


def code_indices(codevectors: torch.Tensor, codebook: torch.Tensor, groups: int) -> torch.Tensor:
    """The entry of each group's codebook nearest to each codevector: [frames, groups]."""
    per_group = codevectors.reshape(-1, groups, codevectors.shape[-1] // groups)
    book = codebook.reshape(groups, -1, per_group.shape[-1])
    return torch.stack([torch.cdist(per_group[:, g], book[g]).argmin(-1) for g in range(groups)], -1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (the model is tiny: a second thread only adds synchronisation)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"Wav2Vec2ForPreTraining (tiny, random init), {args.steps} Adam steps under fg.patch():")
    result = train(args.steps, args.seed)
    moved = sum(not torch.equal(p.detach(), result["before"][n]) for n, p in result["model"].named_parameters())
    print(f"loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f} in {result['seconds']:.2f} s; "
          f"{moved}/{len(result['before'])} parameter tensors changed")

    print("\nSame noise: unpatched F.gumbel_softmax fed fg.gumbel_noise(seed) vs fg.patch(seed=seed):")
    cmp = compare_with_original(seed=1234, model_seed=args.seed)
    original, patched = cmp["runs"]["original"], cmp["runs"]["patched"]
    same_codes = torch.equal(code_indices(original["codevectors"], cmp["codebook"], cmp["groups"]),
                             code_indices(patched["codevectors"], cmp["codebook"], cmp["groups"]))
    print(f"codevectors: same codes {same_codes}, max |difference| {cmp['max_codevector_diff']:.2e}")
    print(f"perplexity {original['perplexity'].item():.6f} vs {patched['perplexity'].item():.6f}; "
          f"diversity loss {original['diversity'].item():.6f} vs {patched['diversity'].item():.6f}; "
          f"contrastive loss {original['contrastive'].item():.6f} vs {patched['contrastive'].item():.6f}")


if __name__ == "__main__":
    main()
