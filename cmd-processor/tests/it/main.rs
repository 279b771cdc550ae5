//! The processor's loader against the real database.
//! One test binary per crate: each file below is a module of it.

mod loader;
