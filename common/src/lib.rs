//! Shared building blocks of Kodis: the slot function, RESP scanning, the topology
//! model, configuration helpers and telemetry set-up.

pub mod acl;
pub mod api;
pub mod big_key;
#[cfg(feature = "certs")]
pub mod certs;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "etcd-flags")]
pub mod etcd_flags;
pub mod failover;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "https-flags")]
pub mod https_flags;
#[cfg(feature = "redis-conn")]
pub mod redis_conn;
pub mod replication;
pub mod resp;
pub mod role;
pub mod routes;
pub mod server_args;
pub mod server_config;
pub mod signals;
pub mod slot;
pub mod store;
pub mod telemetry;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topology;

#[cfg(feature = "test-util")]
pub mod test_util;
