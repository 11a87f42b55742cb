//! kodis-proxy: the Kodis data plane. Clients speak RESP to it as to one Redis; it
//! routes each key to the group of stock Redis servers that owns the key's slot.

pub mod acl;
pub mod admin;
pub mod auth;
pub mod backend;
mod blocking;
pub mod clients;
pub mod command_source;
pub mod command_table;
pub mod commands;
pub mod config;
mod config_set;
pub mod conn;
pub mod control;
pub mod dedicated;
pub mod error;
pub mod error_replies;
pub mod gate;
pub mod histogram;
pub mod info;
pub mod key_move;
pub mod memory;
pub mod merge;
pub mod metrics;
pub mod moved_keys;
pub mod outbox;
pub mod pending;
pub mod pubsub;
pub mod replicas;
pub mod reply;
pub mod reply_slot;
pub mod request_queue;
pub mod router;
pub mod scan;
pub mod server;
pub mod session;
pub mod shared;
pub mod stream;
pub mod tls;
mod transaction;
pub mod workers;

pub use config::{Args, ProxyConfig};
pub use server::{start, ProxyHandle};
