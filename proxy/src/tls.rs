//! TLS with rustls (ring provider): the client port's server configuration, reloaded
//! when its files change, and the backend connector. Shared with the dashboard and
//! kodis-ha, so it lives in [`kodis_common::tls`].

pub use kodis_common::tls::*;
