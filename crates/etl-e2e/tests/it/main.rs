//! Tests across the services: the whole pipeline in-process (`pipeline`),
//! and the services as real processes for signals, crashes and their logs.
//! One test binary per crate: each file below is a module of it.

mod bad_input;
mod browser;
mod cluster;
mod config;
mod crash;
mod dashboard;
mod datasets;
mod fatal_client;
mod journey;
mod monitoring;
mod pipeline;
mod rebalance;
mod redrive;
mod replay;
mod shutdown;
mod traces;
