//! Helpers shared by the tinyrt benchmarks.
