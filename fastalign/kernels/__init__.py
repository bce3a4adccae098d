"""Numba kernels only: C-contiguous arrays in, caller-allocated outputs written. No validation."""
