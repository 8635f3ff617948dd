"""Kernels, one file per op (Triton kernel, host functions, custom op + autograd)."""
