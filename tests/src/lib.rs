//! Integration tests of tinyrt live in `tests/`; this crate only hosts them.
