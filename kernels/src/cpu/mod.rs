//! CPU kernels, one file per ISA with the same function names in each.
