//! xccd: the XCC daemon. Wiring only.
fn main() {}
