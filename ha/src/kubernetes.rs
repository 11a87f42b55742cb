//! The Kubernetes orchestrator: a restart deletes the pod behind a server or proxy,
//! and its StatefulSet or Deployment recreates it (the new redis-server pod starts
//! through its safe-start gate).

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kodis_common::api::ProxyInfo;
use kube::api::{Api, DeleteParams};
use tracing::{info, warn};

use crate::error::HaError;
use crate::orchestrator::Orchestrator;

/// Attempts of one pod deletion before giving up (the next HA round asks again).
const ATTEMPTS: u32 = 4;

/// Restarts pods through the Kubernetes API.
#[derive(Clone)]
pub struct Kubernetes {
    client: kube::Client,
    /// Namespace of servers whose address does not name one.
    namespace: String,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Kubernetes {
    /// From the in-cluster service account (or the local kubeconfig).
    pub async fn infer() -> Result<Self, HaError> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| HaError::Orchestrator(format!("no Kubernetes configuration: {e}")))?;
        let namespace = config.default_namespace.clone();
        let client = kube::Client::try_from(config)
            .map_err(|e| HaError::Orchestrator(format!("Kubernetes client: {e}")))?;
        Ok(Self { client, namespace })
    }

    /// With an API server at `url` (tests: a fake one) and a default namespace.
    pub fn with_url(url: &str, namespace: &str) -> Result<Self, HaError> {
        let uri = url
            .parse()
            .map_err(|e| HaError::Invalid(format!("{url:?} is not a URL: {e}")))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = namespace.to_string();
        let client = kube::Client::try_from(config)
            .map_err(|e| HaError::Orchestrator(format!("Kubernetes client: {e}")))?;
        Ok(Self {
            client,
            namespace: namespace.to_string(),
        })
    }

    /// Deletes pod `name` in `namespace`, retrying API errors; a pod already gone
    /// is fine.
    async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), HaError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut backoff = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match pods.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(pod = %name, %namespace, "pod deleted; its controller recreates it");
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    info!(pod = %name, %namespace, "pod already gone");
                    return Ok(());
                }
                Err(e) => {
                    warn!(pod = %name, %namespace, attempt, error = %e, "deleting the pod failed");
                    last = e.to_string();
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(HaError::Orchestrator(format!(
            "could not delete pod {namespace}/{name} after {ATTEMPTS} attempts: {last}"
        )))
    }
}

/// The pod behind a server address: a StatefulSet pod's stable DNS name is
/// `<pod>.<service>.<namespace>[.svc...]:port`; a name without a namespace label
/// is in `default_ns`. An IP address names no pod.
pub fn pod_of_server(addr: &str, default_ns: &str) -> Result<(String, String), HaError> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    if host.parse::<std::net::IpAddr>().is_ok() || host.is_empty() {
        return Err(HaError::Orchestrator(format!(
            "{addr} names no pod: servers on Kubernetes are registered by their stable DNS \
             name (<pod>.<service>.<namespace>)"
        )));
    }
    let labels: Vec<&str> = host.split('.').collect();
    let namespace = labels.get(2).copied().unwrap_or(default_ns);
    Ok((labels[0].to_string(), namespace.to_string()))
}

#[async_trait]
impl Orchestrator for Kubernetes {
    async fn restart_server(&self, group: u32, addr: &str) -> Result<(), HaError> {
        let (pod, namespace) = pod_of_server(addr, &self.namespace)?;
        info!(group, server = %addr, %pod, "restarting the server's pod");
        self.delete_pod(&namespace, &pod).await
    }

    async fn restart_proxy(&self, proxy: &ProxyInfo) -> Result<(), HaError> {
        let Some(pod) = &proxy.pod_name else {
            return Err(HaError::Orchestrator(format!(
                "proxy {} registered without a pod name (KODIS_POD_NAME)",
                proxy.id
            )));
        };
        let namespace = proxy.namespace.as_deref().unwrap_or(&self.namespace);
        self.delete_pod(namespace, pod).await
    }

    /// Gone for good: the pod does not exist, and its StatefulSet (named like the
    /// pod without its `-<ordinal>`) has fewer replicas than that ordinal, or is gone
    /// itself. A pod deleted for a restart (recreated with the same name) is not.
    async fn server_removed(&self, group: u32, addr: &str) -> Result<bool, HaError> {
        let (pod, namespace) = pod_of_server(addr, &self.namespace)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match pods.get_opt(&pod).await {
            Ok(Some(_)) => return Ok(false),
            Ok(None) => {}
            Err(e) => {
                return Err(HaError::Orchestrator(format!(
                    "GET pod {namespace}/{pod}: {e}"
                )))
            }
        }
        let Some((set, ordinal)) = pod
            .rsplit_once('-')
            .and_then(|(s, o)| Some((s, o.parse::<i32>().ok()?)))
        else {
            return Ok(false);
        };
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &namespace);
        let gone = match sets.get_opt(set).await {
            Ok(Some(s)) => ordinal >= s.spec.and_then(|s| s.replicas).unwrap_or(1),
            Ok(None) => true,
            Err(e) => {
                return Err(HaError::Orchestrator(format!(
                    "GET statefulset {namespace}/{set}: {e}"
                )))
            }
        };
        if gone {
            info!(group, server = %addr, %pod, "pod gone for good (StatefulSet scaled down)");
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_behind_server_addresses() {
        let p = |a: &str| pod_of_server(a, "dflt").map_err(|e| e.to_string());
        assert_eq!(
            p("kodis-group-1-0.kodis-group-1.prod.svc.cluster.local:6379"),
            Ok(("kodis-group-1-0".into(), "prod".into()))
        );
        assert_eq!(
            p("kodis-group-1-0.kodis-group-1:6379"),
            Ok(("kodis-group-1-0".into(), "dflt".into()))
        );
        assert!(p("10.0.0.7:6379").is_err());
        assert!(p("127.0.0.1:7000")
            .expect_err("an IP")
            .contains("names no pod"));
    }
}
