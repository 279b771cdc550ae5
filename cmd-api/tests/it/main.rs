//! The api against the real S3 server and broker, and the body split's properties.
//! One test binary per crate: each file below is a module of it.

mod datasets;
mod import;
mod split_properties;
