//! `kodis deploy render`: the Kubernetes objects of Redis groups (a StatefulSet, a
//! headless Service and a PodDisruptionBudget each), built from typed `k8s-openapi`
//! values, so they are valid by construction, and shaped like the kustomize
//! template `deploy/kubernetes/base/group`: scaling out is render, `kubectl apply`,
//! `kodis rebalance`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What to render.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// Number of groups.
    #[arg(long)]
    pub groups: u32,
    /// Replicas per group (besides its master): R+1 servers per group.
    #[arg(long, default_value_t = 1)]
    pub replicas: u16,
    /// The namespace.
    #[arg(long, default_value = "kodis")]
    pub namespace: String,
    /// The image holding kodis-ha and redis-server.
    #[arg(long, default_value = "kodis:0.1.0")]
    pub image: String,
    /// Number of the first group (groups K, K+1, ...).
    #[arg(long, default_value_t = 1)]
    pub first_group: u32,
    /// The ConfigMap with redis.conf (kustomize adds a hash to its name:
    /// `kubectl -n NS get cm -l app.kubernetes.io/component=redis -o name`).
    #[arg(long, default_value = "kodis-redis-config")]
    pub redis_config: String,
    /// A PersistentVolumeClaim of this size per server (e.g. 10Gi) instead of an
    /// emptyDir, as components/persistence does.
    #[arg(long, value_name = "SIZE")]
    pub storage: Option<String>,
    /// Never two servers of a group on one node (required, not preferred).
    #[arg(long)]
    pub strict_anti_affinity: bool,
    /// The dashboard's URL as the pods reach it, inside the cluster (not the global
    /// --dashboard, which is where this CLI reaches it).
    #[arg(
        long,
        default_value = "http://kodis-dashboard:18080",
        value_name = "URL"
    )]
    pub in_cluster_dashboard: String,
}

/// Every object of every group, as one YAML stream.
pub fn render(a: &RenderArgs) -> Result<String, String> {
    if a.groups == 0 || a.first_group == 0 {
        return Err("--groups and --first-group must be at least 1".into());
    }
    let mut out = String::new();
    for n in a.first_group..a.first_group + a.groups {
        for doc in [
            yaml(&service(a, n))?,
            yaml(&stateful_set(a, n))?,
            yaml(&pdb(a, n))?,
        ] {
            out.push_str("---\n");
            out.push_str(&doc);
        }
    }
    Ok(out)
}

fn yaml<T: serde::Serialize>(v: &T) -> Result<String, String> {
    serde_yaml::to_string(v)
        .map(|y| quote_yaml11_booleans(&y))
        .map_err(|e| format!("cannot write YAML: {e}"))
}

/// Quotes the plain scalars that YAML 1.1 reads as booleans (`yes`, `no`, `on`,
/// `off`, ...): serde_yaml writes YAML 1.2, where they are strings, but kubectl and
/// PyYAML read YAML 1.1, so `--appendonly yes` would reach the API server as `true`.
fn quote_yaml11_booleans(text: &str) -> String {
    const WORDS: [&str; 16] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        // The value: after a list item's `- `, and after a key's `: ` (in `- k: v` too).
        let item = body.len() - body.trim_start().trim_start_matches("- ").len();
        let at = body[item..].find(": ").map_or(item, |i| item + i + 2);
        let (head, value) = body.split_at(at);
        if WORDS.contains(&value) {
            out.push_str(&format!("{head}'{value}'"));
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

fn name(n: u32) -> String {
    format!("kodis-group-{n}")
}

/// The labels of group `n`'s objects and pods (also its selector).
fn labels(n: u32) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "kodis".to_string()),
        ("app.kubernetes.io/part-of", "kodis".to_string()),
        ("app.kubernetes.io/component", "redis".to_string()),
        ("kodis.io/group", n.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn meta(a: &RenderArgs, n: u32) -> ObjectMeta {
    ObjectMeta {
        name: Some(name(n)),
        namespace: Some(a.namespace.clone()),
        labels: Some(labels(n)),
        ..ObjectMeta::default()
    }
}

fn selector(n: u32) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(n)),
        ..LabelSelector::default()
    }
}

/// Headless, publishing not-ready addresses: a starting replica and its master reach
/// each other by their stable names before either is Ready.
fn service(a: &RenderArgs, n: u32) -> Service {
    Service {
        metadata: meta(a, n),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels(n)),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: 6379,
                target_port: Some(IntOrString::String("redis".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pdb(a: &RenderArgs, n: u32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(a, n),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(n)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "kodis-secrets".into(),
                key: key.into(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn exec_probe(cmd: &[&str], period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn stateful_set(a: &RenderArgs, n: u32) -> StatefulSet {
    let addr = format!(
        "$(POD_NAME).{}.$(POD_NAMESPACE).svc.cluster.local:6379",
        name(n)
    );
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        field_env("KODIS_POD_NAME", "metadata.name"),
        field_env("KODIS_POD_NAMESPACE", "metadata.namespace"),
        field_env("KODIS_POD_IP", "status.podIP"),
    ];
    env.extend([
        EnvVar {
            name: "KODIS_GROUP".into(),
            value: Some(n.to_string()),
            ..EnvVar::default()
        },
        EnvVar {
            name: "KODIS_REDIS_ADDR".into(),
            value: Some(addr),
            ..EnvVar::default()
        },
        secret_env("KODIS_REDIS_PASSWORD", "redis-password"),
        secret_env("KODIS_ADMIN_TOKEN", "admin-token"),
        EnvVar {
            name: "TMPDIR".into(),
            value: Some("/tmp".into()),
            ..EnvVar::default()
        },
    ]);
    let alive = ["kodis-ha", "probe", "alive", "--addr", "127.0.0.1:6379"];
    let container = Container {
        name: "redis".into(),
        image: Some(a.image.clone()),
        command: Some(vec!["kodis-ha".into()]),
        args: Some(
            [
                "launch",
                "--join",
                "--group",
                "$(KODIS_GROUP)",
                "--addr",
                "$(KODIS_REDIS_ADDR)",
                "--dashboard",
                &a.in_cluster_dashboard,
                "--",
                "redis-server",
                "/etc/kodis/redis.conf",
            ]
            .iter()
            // With a volume, the append-only file too (after the config file, so it
            // wins), as components/persistence does: a server restarted on its claim
            // comes back with its data.
            .chain(match a.storage {
                Some(_) => &["--appendonly", "yes", "--appendfsync", "everysec"][..],
                None => &[],
            })
            .map(|s| s.to_string())
            .collect(),
        ),
        working_dir: Some("/data".into()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: 6379,
            ..ContainerPort::default()
        }]),
        startup_probe: Some(exec_probe(&alive, 5, 120)),
        readiness_probe: Some(exec_probe(
            &["kodis-ha", "probe", "ready", "--addr", "127.0.0.1:6379"],
            5,
            2,
        )),
        liveness_probe: Some(exec_probe(&alive, 10, 12)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "sh".into(),
                        "-c".into(),
                        format!(
                            "exec kodis-ha prestop --dashboard {} --addr \"$KODIS_REDIS_ADDR\"",
                            a.in_cluster_dashboard
                        ),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [("cpu", "250m"), ("memory", "1Gi")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.into())))
                    .collect(),
            ),
            limits: Some([("memory".to_string(), Quantity("1Gi".into()))].into()),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/kodis".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: a.redis_config.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("16Mi".into())),
            }),
            ..Volume::default()
        },
    ];
    let claims = match &a.storage {
        Some(size) => Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: Some(
                    [
                        ("app.kubernetes.io/name", "kodis"),
                        ("app.kubernetes.io/component", "redis"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_string(), Quantity(size.clone()))].into()),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }]),
        None => {
            volumes.push(Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            });
            None
        }
    };
    let term = PodAffinityTerm {
        topology_key: "kubernetes.io/hostname".into(),
        label_selector: Some(selector(n)),
        ..PodAffinityTerm::default()
    };
    let anti = if a.strict_anti_affinity {
        PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        }
    } else {
        PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..PodAntiAffinity::default()
        }
    };
    StatefulSet {
        metadata: meta(a, n),
        spec: Some(StatefulSetSpec {
            service_name: Some(name(n)),
            // The master and its replicas.
            replicas: Some(i32::from(a.replicas) + 1),
            // Pod 0 joins first and becomes the master; the others after it serves.
            pod_management_policy: Some("OrderedReady".into()),
            selector: selector(n),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(n)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(999),
                        run_as_group: Some(999),
                        fs_group: Some(999),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(anti),
                        ..Affinity::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            // Claims outlive the StatefulSet and a scale-down: the data is kept
            // until someone deletes it.
            persistent_volume_claim_retention_policy: a.storage.as_ref().map(|_| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                }
            }),
            volume_claim_templates: claims,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(groups: u32) -> RenderArgs {
        RenderArgs {
            groups,
            replicas: 2,
            namespace: "shop".into(),
            image: "registry.example/kodis:1.2".into(),
            first_group: 4,
            redis_config: "kodis-redis-config".into(),
            storage: Some("10Gi".into()),
            strict_anti_affinity: true,
            in_cluster_dashboard: "http://kodis-dashboard:18080".into(),
        }
    }

    #[test]
    fn each_group_gets_a_service_a_stateful_set_and_a_pdb() {
        let y = render(&args(2)).unwrap();
        let docs: Vec<serde_yaml::Value> = y
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        let kinds: Vec<(&str, &str)> = docs
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("Service", "kodis-group-4"),
                ("StatefulSet", "kodis-group-4"),
                ("PodDisruptionBudget", "kodis-group-4"),
                ("Service", "kodis-group-5"),
                ("StatefulSet", "kodis-group-5"),
                ("PodDisruptionBudget", "kodis-group-5"),
            ]
        );
        let sts = &docs[4];
        assert_eq!(sts["apiVersion"].as_str(), Some("apps/v1"));
        assert_eq!(sts["metadata"]["namespace"].as_str(), Some("shop"));
        // --replicas 2: the master and two replicas.
        assert_eq!(sts["spec"]["replicas"].as_i64(), Some(3));
        let pod = &sts["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["image"].as_str(), Some("registry.example/kodis:1.2"));
        let env = c["env"].as_sequence().unwrap();
        assert!(env
            .iter()
            .any(|e| e["name"] == "KODIS_GROUP" && e["value"] == "5"));
        // The password only from the Secret.
        assert!(!y.contains("requirepass"));
        assert!(env.iter().any(|e| e["name"] == "KODIS_REDIS_PASSWORD"
            && e["valueFrom"]["secretKeyRef"]["name"] == "kodis-secrets"));
        assert_eq!(
            pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
                ["labelSelector"]["matchLabels"]["kodis.io/group"]
                .as_str(),
            Some("5")
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
                .as_str(),
            Some("10Gi")
        );
        // --storage: the append-only file on, claims kept, as components/persistence.
        let args_of = |c: &serde_yaml::Value| -> Vec<String> {
            c["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            args_of(c)[args_of(c).len() - 4..],
            ["--appendonly", "yes", "--appendfsync", "everysec"]
        );
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"].as_str(),
            Some("Retain")
        );
        let plain = render(&RenderArgs {
            storage: None,
            ..args(1)
        })
        .unwrap();
        assert!(!plain.contains("--appendonly"), "{plain}");
        // Quoted: YAML 1.1 readers (kubectl, PyYAML) would take a plain yes for true.
        assert!(y.contains("- --appendonly\n        - 'yes'\n"), "{y}");
        assert_eq!(
            quote_yaml11_booleans("a:\n- on\n- one\nb: off\nc: 'no'\n- k: n\n  - - no\n"),
            "a:\n- 'on'\n- one\nb: 'off'\nc: 'no'\n- k: 'n'\n  - - 'no'\n"
        );
        assert!(render(&RenderArgs {
            groups: 0,
            ..args(1)
        })
        .is_err());
        // No replica: a master alone.
        let alone = render(&RenderArgs {
            replicas: 0,
            ..args(1)
        })
        .unwrap();
        assert!(alone.contains("\n  replicas: 1\n"), "{alone}");
    }
}
