//! The throwaway CA and certificates of `kodis up --tls`, and the flags that hand
//! them to each part.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kodis_common::redis_conn::ConnSettings;
use kodis_common::server_args::ServerTlsFiles;

use super::UpError;
/// The throwaway TLS files of `kodis up --tls`: made once per data directory, so
/// that clients keep trusting the same CA across runs. The proxies' certificate for
/// clients, the dashboard's (HTTPS), the servers' (server and client use:
/// replication and MIGRATE connect with it), and a client certificate for the dashboard, kodis-ha and the proxies'
/// backend connections, all for 127.0.0.1 and localhost.
#[derive(Debug)]
pub(super) struct TlsFiles {
    pub(super) ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) dashboard_cert: PathBuf,
    pub(super) dashboard_key: PathBuf,
    pub(super) redis_cert: PathBuf,
    pub(super) redis_key: PathBuf,
    pub(super) client_cert: PathBuf,
    pub(super) client_key: PathBuf,
}

impl TlsFiles {
    /// `--backend-tls*` flags (dashboard, kodis-ha, proxies) with these files.
    pub(super) fn backend_args(&self) -> Vec<String> {
        let p = |p: &PathBuf| p.display().to_string();
        vec![
            "--backend-tls".into(),
            "--backend-tls-ca".into(),
            p(&self.ca),
            "--backend-tls-cert".into(),
            p(&self.client_cert),
            "--backend-tls-key".into(),
            p(&self.client_key),
        ]
    }

    /// `--dashboard-ca` (proxies, kodis-ha and its gates) for the HTTPS dashboard.
    pub(super) fn dashboard_ca_args(&self) -> Vec<String> {
        vec!["--dashboard-ca".into(), self.ca.display().to_string()]
    }

    /// The servers' certificate files (TLS only on their ports).
    pub(super) fn server(&self) -> ServerTlsFiles<'_> {
        ServerTlsFiles {
            cert: &self.redis_cert,
            key: &self.redis_key,
            ca: &self.ca,
        }
    }

    /// How `kodis up` itself reaches the servers (its readiness PING).
    pub(super) fn conn(&self) -> Result<ConnSettings, UpError> {
        let args = kodis_common::redis_conn::BackendTlsArgs {
            backend_tls: true,
            backend_tls_ca: Some(self.ca.clone()),
            backend_tls_cert: Some(self.client_cert.clone()),
            backend_tls_key: Some(self.client_key.clone()),
            backend_tls_server_name: None,
        };
        Ok(ConnSettings::new(None, Duration::from_secs(1)).with_tls(args.load()?))
    }

    /// The files in `dir`: those of an earlier run if all are there, else new ones.
    pub(super) fn make(dir: &Path) -> Result<Self, UpError> {
        let files = Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("proxy.crt"),
            key: dir.join("proxy.key"),
            dashboard_cert: dir.join("dashboard.crt"),
            dashboard_key: dir.join("dashboard.key"),
            redis_cert: dir.join("redis.crt"),
            redis_key: dir.join("redis.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        };
        // All or nothing: the CA's key is not kept, so a folder of an earlier
        // version (proxy files only) gets a new CA and every certificate again.
        if [
            &files.ca,
            &files.cert,
            &files.key,
            &files.dashboard_cert,
            &files.dashboard_key,
            &files.redis_cert,
            &files.redis_key,
            &files.client_cert,
            &files.client_key,
        ]
        .iter()
        .all(|f| f.exists())
        {
            return Ok(files);
        }
        std::fs::create_dir_all(dir).map_err(|source| UpError::Io {
            what: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let ca = kodis_common::certs::Ca::new("kodis up throwaway CA")?;
        ca.write_cert(&files.ca)?;
        let names = ["127.0.0.1", "localhost"];
        for (name, usage) in [
            ("proxy", kodis_common::certs::Usage::Server),
            ("dashboard", kodis_common::certs::Usage::Server),
            ("redis", kodis_common::certs::Usage::Both),
            ("client", kodis_common::certs::Usage::Client),
        ] {
            ca.issue(&names, usage)?.write(dir, name)?;
        }
        println!(
            "tls        made a throwaway CA and certificate in {}",
            dir.display()
        );
        Ok(files)
    }
}
