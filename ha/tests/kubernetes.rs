//! The Kubernetes orchestrator against a scripted FAKE Kubernetes API server: no real
//! API server can run on this machine, so a small HTTP server answers pod deletions
//! from a script (errors first, then success) and records what was asked. What is
//! checked is the client side: the right pod in the right namespace, retries on API
//! errors, a pod already gone counted as done, and giving up after the retries.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::delete;
use axum::{Json, Router};
use kodis_common::api::ProxyInfo;
use kodis_ha::kubernetes::Kubernetes;
use kodis_ha::Orchestrator;
use serde_json::{json, Value};
use support::rt;

/// The fake API server's script and log.
#[derive(Default)]
struct Fake {
    /// Statuses to answer, in order; 200 once it is empty.
    script: Mutex<VecDeque<u16>>,
    /// `namespace/pod` of every DELETE received.
    deleted: Mutex<Vec<String>>,
}

async fn delete_pod(
    State(f): State<Arc<Fake>>,
    Path((ns, name)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    f.deleted.lock().unwrap().push(format!("{ns}/{name}"));
    let code = f.script.lock().unwrap().pop_front().unwrap_or(200);
    if code == 200 {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": ns }
        });
        return (StatusCode::OK, Json(pod));
    }
    let status = json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": format!("scripted {code} for pods \"{name}\""),
        "reason": if code == 404 { "NotFound" } else { "InternalError" },
        "code": code
    });
    (StatusCode::from_u16(code).unwrap(), Json(status))
}

async fn fake_api_server(script: &[u16]) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    fake.script.lock().unwrap().extend(script);
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}/pods/{name}", delete(delete_pod))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, url)
}

#[test]
fn fake_api_server_kubernetes_orchestrator_deletes_the_right_pod_with_retries() {
    rt().block_on(async {
        // Two API errors, then success: one restart, three DELETEs of the same pod.
        let (fake, url) = fake_api_server(&[503, 500]).await;
        let k = Kubernetes::with_url(&url, "default").unwrap();
        k.restart_server(
            1,
            "kodis-group-1-0.kodis-group-1.prod.svc.cluster.local:6379",
        )
        .await
        .unwrap();
        assert_eq!(
            *fake.deleted.lock().unwrap(),
            vec!["prod/kodis-group-1-0"; 3],
            "the server's pod, in its namespace, retried"
        );

        // A proxy: its pod from its registration; already gone (404) is done.
        let (fake, url) = fake_api_server(&[404]).await;
        let k = Kubernetes::with_url(&url, "default").unwrap();
        let proxy = ProxyInfo {
            id: "kodis-proxy-7d9f-x2".into(),
            addr: "10.0.0.9:19000".into(),
            admin_addr: "10.0.0.9:11080".into(),
            pod_name: Some("kodis-proxy-7d9f-x2".into()),
            namespace: Some("shop".into()),
            started_at: 0,
            acked_epoch: 0,
        };
        k.restart_proxy(&proxy).await.unwrap();
        assert_eq!(
            *fake.deleted.lock().unwrap(),
            vec!["shop/kodis-proxy-7d9f-x2"]
        );

        // Errors that do not stop: it gives up after its attempts, saying why.
        let (fake, url) = fake_api_server(&[500; 10]).await;
        let k = Kubernetes::with_url(&url, "default").unwrap();
        let e = k
            .restart_server(2, "kodis-group-2-1.kodis-group-2:6379")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("default/kodis-group-2-1") && e.contains("4 attempts"),
            "{e}"
        );
        assert_eq!(fake.deleted.lock().unwrap().len(), 4);

        // No pod behind an IP address, and no pod name: refused without an API call.
        assert!(k.restart_server(2, "10.1.2.3:6379").await.is_err());
        let unnamed = ProxyInfo {
            pod_name: None,
            ..proxy
        };
        assert!(k.restart_proxy(&unnamed).await.is_err());
        assert_eq!(fake.deleted.lock().unwrap().len(), 4);
    });
}

/// A FAKE API server that knows some pods and StatefulSets (GET only): what HA asks
/// before it takes a server out of its group.
async fn fake_cluster(pods: &[&str], sets: &[(&str, i32)]) -> String {
    let pods: Arc<Vec<String>> = Arc::new(pods.iter().map(|p| p.to_string()).collect());
    let sets: Arc<Vec<(String, i32)>> =
        Arc::new(sets.iter().map(|(s, n)| (s.to_string(), *n)).collect());
    let not_found = |kind: &str, name: &str| {
        (
            StatusCode::NOT_FOUND,
            Json(json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404
            })),
        )
    };
    let app = Router::new()
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            axum::routing::get({
                let pods = pods.clone();
                move |Path((ns, name)): Path<(String, String)>| async move {
                    if pods.contains(&name) {
                        (
                            StatusCode::OK,
                            Json(json!({ "apiVersion": "v1", "kind": "Pod",
                                         "metadata": { "name": name, "namespace": ns } })),
                        )
                    } else {
                        not_found("pods", &name)
                    }
                }
            }),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
            axum::routing::get({
                let sets = sets.clone();
                move |Path((ns, name)): Path<(String, String)>| async move {
                    match sets.iter().find(|(s, _)| *s == name) {
                        Some((_, n)) => (
                            StatusCode::OK,
                            Json(json!({
                                "apiVersion": "apps/v1", "kind": "StatefulSet",
                                "metadata": { "name": name, "namespace": ns },
                                "spec": { "replicas": n, "serviceName": name,
                                          "selector": {}, "template": {} }
                            })),
                        ),
                        None => not_found("statefulsets", &name),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[test]
fn fake_api_server_a_server_is_gone_only_when_its_pod_is_and_will_not_come_back() {
    rt().block_on(async {
        // kodis-group-2 was scaled from 3 to 2: pod 2 is gone for good; pod 1 was
        // deleted for a restart (its StatefulSet will recreate it); pod 0 exists.
        let url = fake_cluster(&["kodis-group-2-0"], &[("kodis-group-2", 2)]).await;
        let k = Kubernetes::with_url(&url, "default").unwrap();
        let addr = |i: u32| format!("kodis-group-2-{i}.kodis-group-2.shop.svc.cluster.local:6379");
        assert!(!k.server_removed(2, &addr(0)).await.unwrap(), "pod exists");
        assert!(
            !k.server_removed(2, &addr(1)).await.unwrap(),
            "will be recreated"
        );
        assert!(k.server_removed(2, &addr(2)).await.unwrap(), "scaled away");
        // A whole StatefulSet deleted: gone.
        let gone = "kodis-group-9-0.kodis-group-9.shop.svc.cluster.local:6379";
        assert!(k.server_removed(9, gone).await.unwrap());
        // An IP address names no pod: an error, never a removal.
        assert!(k.server_removed(2, "10.0.0.7:6379").await.is_err());
    });
}
