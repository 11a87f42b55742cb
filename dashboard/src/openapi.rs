//! The OpenAPI 3 document of the REST API, served at `/api/v1/openapi.json`.

use serde_json::{json, Value};

fn op(summary: &str, body: Option<&str>, ok: &str, errors: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(ok.into(), json!({ "description": "success" }));
    for e in errors {
        responses.insert(
            (*e).into(),
            json!({ "description": "error", "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    let mut o = json!({ "summary": summary, "responses": responses });
    if let Some(schema) = body {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": {
            "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
    }
    o
}

fn path_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

/// The document.
pub fn document() -> Value {
    let w = ["400", "401", "409", "503"];
    json!({
        "openapi": "3.0.3",
        "info": { "title": "kodis-dashboard", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
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
                                    "epoch": { "type": "integer" } } }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/api/v1/topology": { "get": op("current topology", None, "200", &["503"]) },
            "/api/v1/overview": { "get": op("groups, servers, slots, proxies and kodis-ha's last report", None, "200", &["503"]) },
            "/api/v1/health": { "put": op("kodis-ha's findings of its last round (kept in memory for the overview)", Some("HealthReport"), "204", &["400", "401"]) },
            "/api/v1/groups": { "post": op("create a group", Some("CreateGroup"), "201", &w) },
            "/api/v1/groups/{id}": { "parameters": [path_param("id")],
                "delete": op("remove an empty group", None, "204", &["400", "401", "404", "409", "503"]) },
            "/api/v1/groups/{id}/servers": { "parameters": [path_param("id")],
                "post": op("add a server (first: master, later: replicas); 409 when it is a member of any group under any address, or holds keys or has replicas without force; 200 when it is already in this group under this address", Some("AddServer"), "201", &["400", "401", "404", "409", "503"]) },
            "/api/v1/groups/{id}/servers/{addr}": { "parameters": [path_param("id"), path_param("addr")],
                "delete": op("remove a server", None, "204", &["400", "401", "404", "409", "503"]) },
            "/api/v1/groups/{id}/promote": { "parameters": [path_param("id")],
                "post": op("make a replica the master (a planned switch with no write lost while the old master answers)", Some("Promote"), "200", &["400", "401", "404", "409", "503"]) },
            "/api/v1/groups/{id}/switchover": { "parameters": [path_param("id")],
                "post": op("the master `from` is about to stop: its best synced replica takes over, no write lost", Some("Switchover"), "200", &["400", "401", "404", "409", "503"]) },
            "/api/v1/slots/init": { "post": op("spread unowned slots over the groups", None, "200", &w) },
            "/api/v1/slots/assign": { "post": op("give unowned slots to a group", Some("AssignSlots"), "200", &["400", "401", "404", "409", "503"]) },
            "/api/v1/slots/migrate": { "post": op("migrate owned slots to a group, online", Some("MigrateSlots"), "202", &["400", "401", "404", "409", "503"]) },
            "/api/v1/rebalance": { "post": {
                "summary": "even out slot counts with the fewest slot moves: started as migrations (202), or only planned with dry_run=true (200)",
                "parameters": [ { "name": "dry_run", "in": "query", "schema": { "type": "boolean" } } ],
                "responses": { "200": { "description": "the plan (dry run)" },
                               "202": { "description": "the plan, its moves started as migrations" },
                               "409": { "description": "migrations are already in flight" } } } },
            "/api/v1/groups/{id}/drain": { "parameters": [path_param("id")],
                "post": op("migrate all of a group's slots to the other groups", None, "202", &["400", "401", "404", "409", "503"]) },
            "/api/v1/migrations": { "get": op("migrations in flight: state, blocking proxies, keys moved, rate, eta", None, "200", &["503"]) },
            "/api/v1/acl": { "get": op("the data-plane ACL user (name, allow_flush, allow_keys) kodis-ha launch defines on its server; no password", None, "200", &[]) },
            "/api/v1/check": {
                "get": op("keys on a group that does not own their slot: count and sample (slots in migration skipped); needs the token when one is set", None, "200", &["401", "409", "503"]),
                "post": op("the same, moving each misplaced key home with MIGRATE (a key of the same name on the owner is a conflict, left in place)", None, "200", &["401", "409", "503"]) },
            "/api/v1/proxies": {
                "get": op("registered proxies", None, "200", &["503"]),
                "post": op("register a proxy", Some("RegisterProxy"), "201", &w) },
            "/api/v1/recover": { "post": op("rebuild a lost or invalid stored topology from a proxy's or from the servers' roles (dry_run: answer it, store nothing)", Some("Recover"), "200", &w) },
            "/api/v1/proxies/{id}": { "parameters": [path_param("id")],
                "delete": op("deregister a proxy", None, "204", &["401", "404", "503"]) }
        }
    })
}
