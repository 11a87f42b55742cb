//! The one builder of a redis-server's arguments in `kodis up`, whether the server
//! starts directly or through its `kodis-ha launch` gate.

use std::ffi::OsString;
use std::path::Path;

use kodis_common::acl::{DataUser, DEFAULT_USER};
use kodis_common::server_args::listen_args;

use super::tls::TlsFiles;

/// `args` as `OsString`s.
fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The arguments of one redis-server of `kodis up`.
#[derive(Debug)]
pub(super) struct RedisArgs<'a> {
    port: u16,
    dir: &'a Path,
    tls: Option<&'a TlsFiles>,
    acl_user: bool,
    replica_of: Option<u16>,
}

impl<'a> RedisArgs<'a> {
    /// A plain server on 127.0.0.1:`port` with its data (AOF, no RDB saves) in `dir`.
    pub(super) fn new(port: u16, dir: &'a Path) -> Self {
        Self {
            port,
            dir,
            tls: None,
            acl_user: false,
            replica_of: None,
        }
    }

    /// TLS only on the port, replication and MIGRATE over TLS, with these files.
    pub(super) fn tls(mut self, tls: Option<&'a TlsFiles>) -> Self {
        self.tls = tls;
        self
    }

    /// Defines the proxies' ACL user at every start (what a gate does otherwise; no
    /// password in `kodis up`, so nothing secret on the command line).
    pub(super) fn acl_user(mut self) -> Self {
        self.acl_user = true;
        self
    }

    /// Starts as a replica of the server on 127.0.0.1:`master` (none: as a master).
    pub(super) fn replica_of(mut self, master: Option<u16>) -> Self {
        self.replica_of = master.filter(|m| *m != self.port);
        self
    }

    /// The command line, program excluded.
    pub(super) fn build(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = listen_args(self.port, self.tls.map(TlsFiles::server))
            .into_iter()
            .map(OsString::from)
            .collect();
        out.extend(os(&["--bind", "127.0.0.1", "--dir"]));
        out.push(self.dir.into());
        // Disk-based full syncs: a replica is in sync at once (no 5 s wait for more
        // replicas), so it can take over a failed master early.
        out.extend(os(&[
            "--appendonly",
            "yes",
            "--save",
            "",
            "--repl-diskless-sync",
            "no",
        ]));
        if self.acl_user {
            out.extend(os(&["--user", DEFAULT_USER]));
            out.extend(
                DataUser::new(DEFAULT_USER)
                    .rules(None)
                    .into_iter()
                    .map(OsString::from),
            );
        }
        if let Some(m) = self.replica_of {
            out.extend(os(&["--replicaof", "127.0.0.1", &m.to_string()]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &RedisArgs<'_>) -> Vec<String> {
        a.build()
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn gated_server_gets_port_data_and_persistence() {
        let a = strings(&RedisArgs::new(7001, Path::new("/d/redis-7001")));
        assert_eq!(
            a,
            [
                "--port",
                "7001",
                "--bind",
                "127.0.0.1",
                "--dir",
                "/d/redis-7001",
                "--appendonly",
                "yes",
                "--save",
                "",
                "--repl-diskless-sync",
                "no"
            ]
        );
    }

    #[test]
    fn direct_replica_defines_the_user_and_follows_its_master() {
        let a = strings(
            &RedisArgs::new(7001, Path::new("/d"))
                .acl_user()
                .replica_of(Some(7000)),
        );
        assert!(a.windows(2).any(|w| w == ["--user", DEFAULT_USER]), "{a:?}");
        assert_eq!(a[a.len() - 3..], ["--replicaof", "127.0.0.1", "7000"]);
        // The master itself is no replica of anything.
        let m = strings(&RedisArgs::new(7000, Path::new("/d")).replica_of(Some(7000)));
        assert!(!m.iter().any(|s| s == "--replicaof"), "{m:?}");
    }
}
