//! Quantization formats: the ggml type table and one module per format family.
//!
//! The table follows `ggml_type` of ggml (ggml.h): ids, block sizes (elements per block) and
//! bytes per block. Removed ids (4, 5, 31..33, 36..38) are reported as unknown.

mod types;

pub use types::{GgmlType, TypeInfo};
