//! The monitor against the real broker and database.
//! One test binary per crate: each file below is a module of it.

mod monitor;
