//! Criterion benches of the hot path (placeholder, filled in below).
fn main() {}
