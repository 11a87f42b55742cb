//! The OpenAPI 3 document of the REST API, served at `/api/v1/openapi.json`.

use serde_json::{json, Value};

/// The answers the API's middleware gives before any handler runs: named in
/// `components.responses` and referenced by each operation they apply to.
const SHARED: [(&str, &str, &str); 4] = [
    (
        "401",
        "Unauthorized",
        "the dashboard has an admin token and the request does not carry it \
         (Authorization: Bearer <token>)",
    ),
    (
        "403",
        "Forbidden",
        "a request that would change something came from a web page (it has an Origin \
         header) other than this dashboard's own console: other pages may only read",
    ),
    (
        "405",
        "MethodNotAllowed",
        "the path does not take this method; the Allow header lists those it takes",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "the request has a body not sent as Content-Type: application/json",
    ),
];

fn error_content() -> Value {
    json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } })
}

/// `components.responses`: the [`SHARED`] answers, each with the Error body.
fn shared_responses() -> Value {
    let mut out = serde_json::Map::new();
    for (code, name, why) in SHARED {
        let mut r = json!({ "description": why, "content": error_content() });
        if code == "405" {
            r["headers"] = json!({ "Allow": { "description": "the methods the path takes",
                "schema": { "type": "string" } } });
        }
        out.insert(name.into(), r);
    }
    Value::Object(out)
}

/// Who may call an operation, which decides the shared answers it lists.
#[derive(Clone, Copy)]
enum Access {
    /// Open to anyone, token or not (probes, scrapers, this document).
    Open,
    /// A read behind the token (401).
    Read,
    /// A change: behind the token (401), refused from web pages (403), JSON bodies
    /// only (415).
    Change,
}

fn op(access: Access, summary: &str, body: Option<&str>, ok: &str, errors: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(ok.into(), json!({ "description": "success" }));
    for e in errors {
        responses.insert(
            (*e).into(),
            json!({ "description": "error", "content": error_content() }),
        );
    }
    let shared: &[&str] = match access {
        Access::Open => &[],
        Access::Read => &["401"],
        Access::Change => &["401", "403", "415"],
    };
    for code in shared {
        if let Some((_, name, _)) = SHARED.iter().find(|(c, _, _)| c == code) {
            responses.insert(
                (*code).into(),
                json!({ "$ref": format!("#/components/responses/{name}") }),
            );
        }
    }
    let mut o = json!({ "summary": summary, "responses": responses });
    if let Access::Open = access {
        o["security"] = json!([]);
    }
    if let Some(schema) = body {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": {
            "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
    }
    o
}

/// A read behind the token.
fn read(summary: &str, errors: &[&str]) -> Value {
    op(Access::Read, summary, None, "200", errors)
}

/// A change (behind the token, JSON only, not from web pages).
fn change(summary: &str, body: Option<&str>, ok: &str, errors: &[&str]) -> Value {
    op(Access::Change, summary, body, ok, errors)
}

/// A read open to anyone.
fn open(summary: &str) -> Value {
    op(Access::Open, summary, None, "200", &[])
}

/// An asset of the web console: open, not JSON, served with a strict
/// Content-Security-Policy.
fn console(summary: &str) -> Value {
    let mut o = open(summary);
    o["responses"]["200"]["description"] =
        json!("the asset, with Content-Security-Policy: only this dashboard");
    o
}

fn path_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

/// The document.
pub fn document() -> Value {
    let w = ["400", "409", "502", "503"];
    let e = ["400", "404", "409", "502", "503"];
    let mut rebalance = change(
        "even out slot counts with the fewest slot moves: started as migrations (202), or only planned with dry_run=true (200)",
        None,
        "202",
        &["400", "409", "503"],
    );
    rebalance["parameters"] =
        json!([ { "name": "dry_run", "in": "query", "schema": { "type": "boolean" } } ]);
    rebalance["responses"]["200"] = json!({ "description": "the plan (dry run)" });
    rebalance["responses"]["202"] =
        json!({ "description": "the plan, its moves started as migrations" });
    rebalance["responses"]["409"]["description"] = json!("migrations are already in flight");
    let mut readyz = open("ready: this dashboard is the active one and its stored topology can be served (503 with the reason otherwise)");
    readyz["responses"]["503"] =
        json!({ "description": "a standby, or a stored topology that cannot be served" });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "kodis-dashboard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "When the dashboard has an admin token, every route but /healthz, \
                /readyz, /metrics, /api/v1/openapi.json and the web console's assets (/, \
                /console.css, /console.js, /favicon.svg) needs `Authorization: Bearer \
                <token>` (401); without one it listens on loopback only. A request that \
                would change something and carries an Origin header (a web page) gets 403, \
                unless it comes from the dashboard's own console (same origin, and a \
                loopback host when no token is set); \
                a body not sent as application/json gets 415; a method a path does not \
                list gets 405 with an Allow header. Every error body is an Error."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": shared_responses(),
            "schemas": {
                "Error": { "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "string" } } },
                "CreateGroup": { "type": "object", "required": ["id"],
                    "properties": { "id": { "type": "integer", "minimum": 1 } } },
                "AddServer": { "type": "object", "required": ["addr"],
                    "properties": { "addr": { "type": "string" }, "force": { "type": "boolean" } } },
                "Recover": { "type": "object",
                    "properties": { "from_proxy": { "type": "string" },
                                    "servers": { "type": "array", "items": { "type": "string" } },
                                    "dry_run": { "type": "boolean" }, "force": { "type": "boolean" } } },
                "ConfigPair": { "type": "object", "required": ["name", "value"],
                    "properties": { "name": { "type": "string" }, "value": { "type": "string" } } },
                "SetConfig": { "type": "object", "required": ["set"],
                    "properties": { "set": { "type": "array", "items": { "$ref": "#/components/schemas/ConfigPair" } } } },
                "SetUser": { "type": "object", "required": ["name"],
                    "properties": { "name": { "type": "string" },
                                    "password": { "type": "string", "description": "in clear; hashed, never stored" },
                                    "password_sha256": { "type": "string", "description": "64 lowercase hex digits" },
                                    "rules": { "type": "string", "description": "ACL SETUSER syntax, e.g. `on ~app:* +@all -@dangerous`" } } },
                "ClientUsers": { "type": "object",
                    "properties": { "version": { "type": "integer" },
                                    "users": { "type": "array", "items": { "type": "object",
                                        "properties": { "name": { "type": "string" },
                                                        "password_sha256": { "type": "string" },
                                                        "rules": { "type": "string" } } } } } },
                "ServerSettings": { "type": "object",
                    "properties": { "settings": { "type": "array", "items": { "$ref": "#/components/schemas/ConfigPair" } } } },
                "Promote": { "type": "object", "required": ["addr"],
                    "properties": { "addr": { "type": "string" } } },
                "Switchover": { "type": "object", "required": ["from"],
                    "properties": { "from": { "type": "string" } } },
                "AssignSlots": { "type": "object", "required": ["from", "to", "group"],
                    "properties": { "from": { "type": "integer" }, "to": { "type": "integer" },
                                    "group": { "type": "integer" } } },
                "MigrateSlots": { "type": "object", "required": ["from", "to", "group"],
                    "properties": { "from": { "type": "integer" }, "to": { "type": "integer" },
                                    "group": { "type": "integer" } } },
                "RegisterProxy": { "type": "object", "required": ["addr", "admin_addr"],
                    "properties": { "addr": { "type": "string" }, "admin_addr": { "type": "string" },
                                    "pod_name": { "type": "string" }, "namespace": { "type": "string" },
                                    "epoch": { "type": "integer" } } },
                "TargetHealth": { "type": "object", "required": ["name", "up"],
                    "properties": { "name": { "type": "string" }, "up": { "type": "boolean" },
                                    "probe_us": { "type": "integer" }, "error": { "type": "string" } } },
                "HealthReport": { "type": "object", "required": ["reporter", "servers", "proxies"],
                    "properties": { "reporter": { "type": "string" },
                                    "servers": { "type": "array", "items": { "$ref": "#/components/schemas/TargetHealth" } },
                                    "proxies": { "type": "array", "items": { "$ref": "#/components/schemas/TargetHealth" } },
                                    "epoch": { "type": "integer" } } }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/api/v1/topology": { "get": read("current topology", &["503"]) },
            "/api/v1/overview": { "get": read("in one answer what the console shows: groups with each server's role, reachability and INFO figures (used_memory, instantaneous_ops_per_sec, connected_clients, keys, total_commands_processed, replication offset, replica link and lag in bytes), read now with a short timeout; slot ranges; proxies with their acknowledged epoch and, from each proxy's /metrics, commands received and clients; migrations as GET /migrations answers; kodis-ha's last report", &["503"]) },
            "/api/v1/health": { "put": change("kodis-ha's findings of its last round (kept in memory for the overview)", Some("HealthReport"), "204", &["400"]) },
            "/api/v1/groups": { "post": change("create a group", Some("CreateGroup"), "201", &w) },
            "/api/v1/groups/{id}": { "parameters": [path_param("id")],
                "delete": change("remove an empty group", None, "204", &e) },
            "/api/v1/groups/{id}/servers": { "parameters": [path_param("id")],
                "post": change("add a server (first: master, later: replicas); 409 when it is a member of any group under any address, or holds keys or has replicas without force; 200 when it is already in this group under this address", Some("AddServer"), "201", &e) },
            "/api/v1/groups/{id}/servers/{addr}": { "parameters": [path_param("id"), path_param("addr")],
                "delete": change("remove a server", None, "204", &e) },
            "/api/v1/groups/{id}/promote": { "parameters": [path_param("id")],
                "post": change("make a replica the master (a planned switch with no write lost while the old master answers)", Some("Promote"), "200", &e) },
            "/api/v1/groups/{id}/switchover": { "parameters": [path_param("id")],
                "post": change("the master `from` is about to stop: its best synced replica takes over, no write lost", Some("Switchover"), "200", &e) },
            "/api/v1/slots/init": { "post": change("spread unowned slots over the groups", None, "200", &w) },
            "/api/v1/slots/assign": { "post": change("give unowned slots to a group", Some("AssignSlots"), "200", &e) },
            "/api/v1/slots/migrate": { "post": change("migrate owned slots to a group, online", Some("MigrateSlots"), "202", &e) },
            "/api/v1/rebalance": { "post": rebalance },
            "/api/v1/groups/{id}/drain": { "parameters": [path_param("id")],
                "post": change("migrate all of a group's slots to the other groups", None, "202", &e) },
            "/api/v1/migrations": { "get": read("migrations in flight: state, blocking proxies, keys moved, rate, eta", &["503"]) },
            "/api/v1/acl": { "get": read("the data-plane ACL user (name, allow_flush, allow_keys, allow_client_pause) kodis-ha launch defines on its server; no password", &[]) },
            "/api/v1/config": {
                "get": read("the recorded cluster-wide Redis settings (ServerSettings), which kodis-ha launch applies to its server at every start", &["503"]),
                "post": change("CONFIG SET on every server of every group, replicas included, all or nothing, then recorded (answers ServerSettings); 400 for a parameter Kodis refuses, 409 when a server refused or could not be reached (the others set back; the error text is the RESP error, a server's own when every server refused alike)", Some("SetConfig"), "200", &w) },
            "/api/v1/config/{name}": { "parameters": [path_param("name")],
                "delete": change("forget a recorded setting (servers keep their value until they restart); answers ServerSettings", None, "200", &["404", "503"]) },
            "/api/v1/users": {
                "get": read("the client ACL users (ClientUsers: names, password SHA-256s, rules) every proxy fetches and serves without a restart", &["503"]),
                "post": change("add a client ACL user or replace the one of that name (answers ClientUsers); 400 for rules a proxy would refuse", Some("SetUser"), "200", &w) },
            "/api/v1/users/{name}": { "parameters": [path_param("name")],
                "delete": change("remove a client ACL user (answers ClientUsers)", None, "200", &["404", "503"]) },
            "/api/v1/check": {
                "get": read("keys on a group that does not own their slot: count and sample (slots in migration skipped)", &["409", "503"]),
                "post": change("the same, moving each misplaced key home with MIGRATE (a key of the same name on the owner is a conflict, left in place)", None, "200", &["409", "503"]) },
            "/api/v1/proxies": {
                "get": read("registered proxies", &["503"]),
                "post": change("register a proxy", Some("RegisterProxy"), "201", &w) },
            "/api/v1/recover": { "post": change("rebuild a lost or invalid stored topology from a proxy's or from the servers' roles (dry_run: answer it, store nothing)", Some("Recover"), "200", &w) },
            "/api/v1/proxies/{id}": { "parameters": [path_param("id")],
                "delete": change("deregister a proxy", None, "204", &["404", "503"]) },
            "/api/v1/openapi.json": { "get": open("this document") },
            "/": { "get": console("the web console's page (HTML)") },
            "/console.css": { "get": console("the web console's style sheet") },
            "/console.js": { "get": console("the web console's script") },
            "/favicon.svg": { "get": console("the web console's icon") },
            "/healthz": { "get": open("alive, and whether this dashboard is the active one") },
            "/readyz": { "get": readyz },
            "/metrics": { "get": open("Prometheus metrics (OpenMetrics text)") }
        }
    })
}

#[cfg(test)]
mod tests {
    /// The document lists every route the router is built from (the same constants),
    /// and no `/api/v1` path that is not one of them.
    #[test]
    fn every_route_is_documented() {
        let doc = super::document();
        let paths = doc["paths"].as_object().expect("paths");
        for r in kodis_common::routes::ALL {
            assert!(paths.contains_key(r), "{r} is not in the OpenAPI document");
        }
        for p in paths
            .keys()
            .filter(|p| p.starts_with(kodis_common::routes::API))
        {
            assert!(
                kodis_common::routes::ALL.contains(&p.as_str()),
                "{p} is documented but is no route constant"
            );
        }
    }
}
