"""N:M kernels and mask methods (magnitude, wanda, sparsegpt) and channel permutation search."""
