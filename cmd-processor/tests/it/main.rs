//! The processor's loader and its datasets' tables against the real database.
//! One test binary per crate: each file below is a module of it.

mod loader;
mod tables;
