"""Scripts that reproduce the Gumbel-Softmax paper's claims with the project's kernels."""
