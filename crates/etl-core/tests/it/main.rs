//! etl-core against the real broker and S3 server, and its properties.
//! One test binary per crate: each file below is a module of it.

mod broker;
mod documented_settings;
mod object_store;
mod slug_properties;
