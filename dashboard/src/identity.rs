//! What a server is, as it reports itself (run id, addresses, keys, replication), and
//! the addresses a name stands for: how the dashboard tells one redis-server from
//! another whatever name it was given (see [`crate::join`]).

use std::net::SocketAddr;

use kodis_common::replication::Replication;

/// What a server is, as it reports itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The address it was reached at, as given.
    pub addr: String,
    /// `run_id` of `INFO server`: one per redis-server process.
    pub run_id: String,
    /// Where it listens: what `addr` resolves to, and the local address of the
    /// probing connection as the server reported it.
    pub addrs: Vec<SocketAddr>,
    /// Keys in all its databases (`INFO keyspace`).
    pub keys: u64,
    /// Connected replicas (`connected_slaves`).
    pub replicas: u64,
    /// Its replication state.
    pub replication: Replication,
    /// For a replica: what its master's address resolves to.
    pub master_addrs: Vec<SocketAddr>,
}

impl Identity {
    /// Builds an identity from the text of `INFO server replication keyspace`.
    pub fn parse(
        addr: &str,
        info: &str,
        addrs: Vec<SocketAddr>,
        replication: Replication,
        master_addrs: Vec<SocketAddr>,
    ) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        // `db0:keys=3,expires=0,avg_ttl=0`, one line per non-empty database.
        let keys = info
            .lines()
            .filter(|l| l.starts_with("db"))
            .filter_map(|l| {
                let (_, fields) = l.split_once(':')?;
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("keys="))?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        Self {
            addr: addr.to_string(),
            run_id: field("run_id").unwrap_or_default(),
            addrs,
            keys,
            replicas: field("connected_slaves")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            replication,
            master_addrs,
        }
    }
}

/// What `addr` (`host:port`) resolves to; nothing when it does not.
pub async fn resolve(addr: &str) -> Vec<SocketAddr> {
    match tokio::net::lookup_host(addr).await {
        Ok(it) => {
            let mut out: Vec<SocketAddr> = Vec::new();
            for a in it {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
            out
        }
        Err(_) => Vec::new(),
    }
}

/// The `laddr=` field of a `CLIENT INFO` line.
pub fn laddr(client_info: &str) -> Option<SocketAddr> {
    client_info
        .split_whitespace()
        .find_map(|f| f.strip_prefix("laddr="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_run_id_keys_and_replicas() {
        let info = "# Server\r\nrun_id:abc\r\n# Replication\r\nrole:master\r\n\
                    connected_slaves:2\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n\
                    db5:keys=4,expires=1,avg_ttl=9\r\n";
        let i = Identity::parse("h:1", info, Vec::new(), Replication::default(), Vec::new());
        assert_eq!((i.run_id.as_str(), i.keys, i.replicas), ("abc", 7, 2));
        assert_eq!(
            laddr("id=3 addr=127.0.0.1:5 laddr=127.0.0.1:6379 fd=8"),
            Some("127.0.0.1:6379".parse().expect("an address"))
        );
    }
}
