//! The Kodis control plane: `kodis-dashboard` (REST admin API, the single writer of
//! the topology, pushes to proxies) and the `kodis` CLI.

pub mod big_keys;
pub mod buckets;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod dashboard;
pub mod error;
pub mod handover;
pub mod identity;
pub mod join;
pub mod metrics;
pub mod migrator;
pub mod openapi;
pub mod overview;
pub mod plan;
pub mod progress;
pub mod recover;
pub mod routes;
pub mod server;
pub mod servers;
pub mod settings;
pub mod stream_groups;
pub mod supervisor;
pub mod users;

pub use config::DashboardConfig;
pub use server::{start, DashboardHandle};
