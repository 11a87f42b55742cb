//! The dashboard's route paths: one constant per path, used by the dashboard's router
//! (axum's `{name}` captures) and by every client (through [`path`]), so a path is
//! written once.

/// The prefix of the REST API.
pub const API: &str = "/api/v1";

/// `GET`: the current topology.
pub const TOPOLOGY: &str = "/api/v1/topology";
/// `GET`: the data-plane ACL user.
pub const ACL: &str = "/api/v1/acl";
/// `GET`, `POST`: cluster-wide Redis settings.
pub const CONFIG: &str = "/api/v1/config";
/// `DELETE`: one cluster-wide setting.
pub const CONFIG_ONE: &str = "/api/v1/config/{name}";
/// `GET`, `POST`: client ACL users.
pub const USERS: &str = "/api/v1/users";
/// `DELETE`: one client ACL user.
pub const USER: &str = "/api/v1/users/{name}";
/// `GET`: misplaced keys; `POST`: move them home.
pub const CHECK: &str = "/api/v1/check";
/// `GET`: the overview.
pub const OVERVIEW: &str = "/api/v1/overview";
/// `PUT`: kodis-ha's health report.
pub const HEALTH: &str = "/api/v1/health";
/// `POST`: create a group.
pub const GROUPS: &str = "/api/v1/groups";
/// `DELETE`: remove a group.
pub const GROUP: &str = "/api/v1/groups/{id}";
/// `POST`: add a server to a group.
pub const GROUP_SERVERS: &str = "/api/v1/groups/{id}/servers";
/// `DELETE`: remove a server from a group.
pub const GROUP_SERVER: &str = "/api/v1/groups/{id}/servers/{addr}";
/// `POST`: make a server its group's master.
pub const GROUP_PROMOTE: &str = "/api/v1/groups/{id}/promote";
/// `POST`: a planned switch away from a master.
pub const GROUP_SWITCHOVER: &str = "/api/v1/groups/{id}/switchover";
/// `POST`: move every slot off a group.
pub const GROUP_DRAIN: &str = "/api/v1/groups/{id}/drain";
/// `POST`: spread the slots over the groups of an empty cluster.
pub const SLOTS_INIT: &str = "/api/v1/slots/init";
/// `POST`: assign unowned slots.
pub const SLOTS_ASSIGN: &str = "/api/v1/slots/assign";
/// `POST`: migrate slots.
pub const SLOTS_MIGRATE: &str = "/api/v1/slots/migrate";
/// `POST`: rebalance (`?dry_run=true`: the plan only).
pub const REBALANCE: &str = "/api/v1/rebalance";
/// `GET`: migrations in flight.
pub const MIGRATIONS: &str = "/api/v1/migrations";
/// `GET`: registered proxies; `POST`: register one.
pub const PROXIES: &str = "/api/v1/proxies";
/// `DELETE`: deregister a proxy.
pub const PROXY: &str = "/api/v1/proxies/{id}";
/// `POST`: recover a lost store from a proxy's topology.
pub const RECOVER: &str = "/api/v1/recover";
/// `GET`: the OpenAPI document.
pub const OPENAPI: &str = "/api/v1/openapi.json";
/// `GET`: liveness.
pub const HEALTHZ: &str = "/healthz";
/// `GET`: readiness.
pub const READYZ: &str = "/readyz";
/// `GET`: Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// Every route above, for checks that each is served and documented.
pub const ALL: [&str; 28] = [
    TOPOLOGY,
    ACL,
    CONFIG,
    CONFIG_ONE,
    USERS,
    USER,
    CHECK,
    OVERVIEW,
    HEALTH,
    GROUPS,
    GROUP,
    GROUP_SERVERS,
    GROUP_SERVER,
    GROUP_PROMOTE,
    GROUP_SWITCHOVER,
    GROUP_DRAIN,
    SLOTS_INIT,
    SLOTS_ASSIGN,
    SLOTS_MIGRATE,
    REBALANCE,
    MIGRATIONS,
    PROXIES,
    PROXY,
    RECOVER,
    OPENAPI,
    HEALTHZ,
    READYZ,
    METRICS,
];

/// `template` with each `{...}` capture replaced, in order, by one of `args`,
/// percent-encoded as a path segment (server addresses hold `:`, IPv6 ones `[` `]`).
/// Captures without an argument are left as they are.
pub fn path(template: &str, args: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut args = args.iter();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        match args.next() {
            Some(a) => out.push_str(&encode_segment(a)),
            None => out.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_are_filled_and_encoded() {
        assert_eq!(path(GROUP, &["3"]), "/api/v1/groups/3");
        assert_eq!(
            path(GROUP_SERVER, &["1", "[::1]:7000"]),
            "/api/v1/groups/1/servers/%5B%3A%3A1%5D%3A7000"
        );
        assert_eq!(path(TOPOLOGY, &[]), TOPOLOGY);
        assert_eq!(encode_segment("kodis-proxy-0"), "kodis-proxy-0");
    }
}
