//! The flags of TLS to etcd, shared by kodis-dashboard (its store) and kodis-ha (its
//! leader lock), so both spell and check them alike.

use std::path::PathBuf;

use crate::store::EtcdTls;

/// `--etcd-ca`, `--etcd-cert` and `--etcd-key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct EtcdTlsFlags {
    /// PEM CA certificate of etcd's server certificate: etcd is reached over TLS
    /// (https:// endpoints) [default: none, plain HTTP].
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for an etcd started with --client-cert-auth (needs
    /// --etcd-key and --etcd-ca).
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdTlsFlags {
    /// The settings, checked against `endpoints` (the flags together, https://
    /// endpoints, files that exist); `None` without --etcd-ca.
    pub fn checked(&self, endpoints: &[String]) -> Result<Option<EtcdTls>, String> {
        EtcdTls::from_flags(
            endpoints,
            self.etcd_ca.as_deref(),
            self.etcd_cert.as_deref(),
            self.etcd_key.as_deref(),
        )
    }

    /// The settings as given, unchecked (for a configuration validated at start-up);
    /// `None` without --etcd-ca.
    pub fn settings(&self) -> Option<EtcdTls> {
        self.etcd_ca.as_ref().map(|ca| EtcdTls {
            ca: ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        })
    }
}
