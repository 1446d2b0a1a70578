pub mod dot;
pub mod ops;
