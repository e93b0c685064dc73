//! End-to-end tests across the spice-hf crates live in `it/`.
