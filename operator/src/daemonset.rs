//! The `node-agent` DaemonSet that runs the agent on Companion nodes (nodes whose kubelet is
//! not node-agent). Agent-managed nodes run node-agent from systemd instead.
//!
//! The pod has what a Companion agent needs and no more: the node's network namespace
//! (host network: it programs the node's Service rules in place of kube-proxy), the
//! capabilities `NET_ADMIN` (iptables, conntrack) and `NET_RAW` (iptables' raw sockets)
//! with every other one dropped, not privileged, no privilege escalation, a read-only root
//! filesystem, the runtime's default seccomp profile, and two host paths: the directory of
//! the container runtime's socket (the agent only reads through CRI: status, inventory) and
//! the xtables lock it shares with every other iptables user of the node.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource,
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::defaults::Defaults;
use crate::nodeconfig::{AGENT_MANAGED_LABEL, FIELD_MANAGER};

/// Name of the DaemonSet, of its ServiceAccount, and of its container.
pub const NAME: &str = "node-agent";
/// Annotation on the pod template with the full image reference (labels cannot hold one).
pub const IMAGE_ANNOTATION: &str = "nodeconfig.dev/agent-image";
/// Port of the agent's /healthz and /readyz on the host network.
pub const AGENT_PORT: i32 = 10356;

/// The DaemonSet as the operator applies it.
pub fn desired(namespace: &str, defaults: &Defaults) -> DaemonSet {
    let agent = &defaults.agent;
    let selector_labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), NAME.to_string()),
        (
            "app.kubernetes.io/part-of".to_string(),
            "nodeconfig".to_string(),
        ),
    ]);
    let mut labels = selector_labels.clone();
    labels.insert("app.kubernetes.io/component".into(), "agent".into());
    labels.insert("app.kubernetes.io/version".into(), agent.version.clone());
    let mut object_labels = labels.clone();
    object_labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    let annotations = BTreeMap::from([(IMAGE_ANNOTATION.to_string(), agent.image.clone())]);

    let host_path = |name: &str, path: &str, type_: &str| Volume {
        name: name.to_string(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string(),
            type_: Some(type_.to_string()),
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        ..VolumeMount::default()
    };
    let env = env_var;
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            host: Some("127.0.0.1".into()),
            path: Some(path.into()),
            port: IntOrString::Int(AGENT_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Probe::default()
    };

    // The operator's defaults refuse an endpoint without a socket directory.
    let cri_dir = agent
        .cri_socket_host_dir()
        .unwrap_or_else(|| "/run/containerd".to_string());
    let mut env = vec![
        EnvVar {
            name: "NODE_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        // A kubelet runs these nodes: the agent must never start or stop pods there.
        env("NODECONFIG_MODE", "companion"),
        env("NODECONFIG_LISTEN", &format!("127.0.0.1:{AGENT_PORT}")),
        // After NODE_NAME, so that `$(NODE_NAME)` in it is expanded.
        env("NODECONFIG_CRI_ENDPOINT", &agent.cri_endpoint),
    ];
    if let Some(api) = &agent.api_server {
        // Read by the in-cluster configuration; set here, they win over the kubelet's
        // service variables of the same names.
        env.push(env_var("KUBERNETES_SERVICE_HOST", &api.host));
        env.push(env_var("KUBERNETES_SERVICE_PORT", &api.port.to_string()));
    }

    let container = Container {
        name: NAME.into(),
        image: Some(agent.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(env),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("cri-socket-dir", &cri_dir),
            mount("xtables-lock", "/run/xtables.lock"),
        ]),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("50m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };

    let mut match_expressions = vec![NodeSelectorRequirement {
        key: AGENT_MANAGED_LABEL.into(),
        operator: "NotIn".into(),
        values: Some(vec!["true".into()]),
    }];
    match_expressions.extend(defaults.node_selector.iter().map(|(key, value)| {
        NodeSelectorRequirement {
            key: key.clone(),
            operator: "In".into(),
            values: Some(vec![value.clone()]),
        }
    }));

    DaemonSet {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(object_labels),
            annotations: Some(annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(agent.max_unavailable.clone()),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    host_network: Some(true),
                    host_pid: Some(false),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    priority_class_name: Some("system-node-critical".into()),
                    termination_grace_period_seconds: Some(30),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    }]),
                    affinity: Some(Affinity {
                        node_affinity: Some(NodeAffinity {
                            required_during_scheduling_ignored_during_execution: Some(
                                NodeSelector {
                                    node_selector_terms: vec![NodeSelectorTerm {
                                        match_expressions: Some(match_expressions),
                                        ..NodeSelectorTerm::default()
                                    }],
                                },
                            ),
                            ..NodeAffinity::default()
                        }),
                        ..Affinity::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        host_path("cri-socket-dir", &cri_dir, "Directory"),
                        host_path("xtables-lock", "/run/xtables.lock", "FileOrCreate"),
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        },
        ..DaemonSet::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::AgentDefaults;

    fn with_agent(
        image: &str,
        version: &str,
        max_unavailable: IntOrString,
        selector: &[(&str, &str)],
    ) -> Defaults {
        Defaults {
            agent: AgentDefaults {
                image: image.into(),
                version: version.into(),
                max_unavailable,
                ..Defaults::default().agent
            },
            node_selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Defaults::default()
        }
    }

    fn pod_spec(ds: &DaemonSet) -> &PodSpec {
        ds.spec.template.spec.as_ref().expect("pod spec")
    }

    /// A node affinity requirement as (key, operator, values).
    type Requirement = (String, String, Vec<String>);

    fn node_requirements(ds: &DaemonSet) -> Vec<Requirement> {
        let terms = &pod_spec(ds)
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("required node affinity")
            .node_selector_terms;
        assert_eq!(terms.len(), 1, "one term: its expressions are ANDed");
        terms[0]
            .match_expressions
            .iter()
            .flatten()
            .map(|r| {
                (
                    r.key.clone(),
                    r.operator.clone(),
                    r.values.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn runs_on_companion_nodes_that_match_the_selector() {
        type Labels<'a> = &'a [(&'a str, &'a str)];
        let cases: Vec<(Labels<'_>, Vec<Requirement>)> = vec![
            (
                &[],
                vec![(
                    AGENT_MANAGED_LABEL.into(),
                    "NotIn".into(),
                    vec!["true".into()],
                )],
            ),
            (
                &[("role", "edge")],
                vec![
                    (
                        AGENT_MANAGED_LABEL.into(),
                        "NotIn".into(),
                        vec!["true".into()],
                    ),
                    ("role".into(), "In".into(), vec!["edge".into()]),
                ],
            ),
        ];
        for (selector, want) in cases {
            let ds = desired("ns", &with_agent("a:1", "1", IntOrString::Int(1), selector));
            assert_eq!(node_requirements(&ds), want, "{selector:?}");
        }
    }

    #[test]
    fn pod_is_a_host_network_agent_that_tolerates_every_taint() {
        let ds = desired("nodeconfig-system", &Defaults::default());
        assert_eq!(ds.metadata.name.as_deref(), Some("node-agent"));
        assert_eq!(ds.metadata.namespace.as_deref(), Some("nodeconfig-system"));
        let pod = pod_spec(&ds);
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.host_pid, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("node-agent"));
        let tolerations = pod.tolerations.as_ref().expect("tolerations");
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
        assert!(tolerations[0].key.is_none() && tolerations[0].effect.is_none());
        let container = &pod.containers[0];
        assert_eq!(
            container
                .security_context
                .as_ref()
                .and_then(|s| s.privileged),
            Some(false)
        );
        let node_name = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "NODE_NAME")
            .expect("NODE_NAME");
        assert_eq!(
            node_name
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("spec.nodeName")
        );
        let volumes: Vec<_> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                let hp = v.host_path.as_ref().expect("hostPath");
                (hp.path.as_str(), hp.type_.as_deref())
            })
            .collect();
        assert_eq!(
            volumes,
            vec![
                ("/run/containerd", Some("Directory")),
                ("/run/xtables.lock", Some("FileOrCreate"))
            ]
        );
        let mounts: Vec<_> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, vec!["/run/containerd", "/run/xtables.lock"]);
    }

    #[test]
    fn image_and_max_unavailable_come_from_the_defaults() {
        let cases = [
            (
                "nodeconfig.local/node-agent:0.1.0",
                "0.1.0",
                IntOrString::Int(1),
            ),
            (
                "nodeconfig.local/node-agent:0.2.0",
                "0.2.0",
                IntOrString::String("20%".into()),
            ),
        ];
        for (image, version, max_unavailable) in cases {
            let ds = desired(
                "ns",
                &with_agent(image, version, max_unavailable.clone(), &[]),
            );
            let spec = &ds.spec;
            let template_meta = spec.template.metadata.as_ref().expect("template metadata");
            assert_eq!(pod_spec(&ds).containers[0].image.as_deref(), Some(image));
            assert_eq!(
                template_meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/version"))
                    .map(String::as_str),
                Some(version)
            );
            assert_eq!(
                template_meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(IMAGE_ANNOTATION))
                    .map(String::as_str),
                Some(image)
            );
            let strategy = spec.update_strategy.as_ref().expect("strategy");
            assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
            assert_eq!(
                strategy
                    .rolling_update
                    .as_ref()
                    .and_then(|r| r.max_unavailable.clone()),
                Some(max_unavailable)
            );
        }
    }

    #[test]
    fn selector_never_changes_with_the_version() {
        let a = desired("ns", &with_agent("a:1", "1", IntOrString::Int(1), &[]));
        let b = desired(
            "ns",
            &with_agent("a:2", "2", IntOrString::Int(1), &[("x", "y")]),
        );
        let selector = |ds: &DaemonSet| Some(ds.spec.selector.clone());
        assert_eq!(selector(&a), selector(&b), "spec.selector is immutable");
        let template_labels = b
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let selected = selector(&b)
            .and_then(|s| s.match_labels)
            .unwrap_or_default();
        assert!(
            selected
                .iter()
                .all(|(k, v)| template_labels.get(k) == Some(v)),
            "the selector selects the template"
        );
    }
}

#[cfg(test)]
mod privilege_tests {
    use super::*;
    use crate::defaults::ApiServer;

    fn container(ds: &DaemonSet) -> &Container {
        &ds.spec.template.spec.as_ref().expect("pod spec").containers[0]
    }

    fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    #[test]
    fn the_agent_gets_net_admin_and_net_raw_and_nothing_else() {
        let ds = desired("ns", &Defaults::default());
        let sc = container(&ds)
            .security_context
            .clone()
            .expect("securityContext");
        let caps = sc.capabilities.expect("capabilities");
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            caps.add,
            Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()])
        );
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".to_string())
        );
    }

    #[test]
    fn the_cri_endpoint_and_its_directory_come_from_the_defaults() {
        let mut defaults = Defaults::default();
        defaults.agent.cri_endpoint =
            "unix:///run/nodeconfig-e2e/nodes/$(NODE_NAME)/containerd.sock".into();
        let ds = desired("ns", &defaults);
        let c = container(&ds);
        assert_eq!(
            env_value(c, "NODECONFIG_CRI_ENDPOINT"),
            Some("unix:///run/nodeconfig-e2e/nodes/$(NODE_NAME)/containerd.sock")
        );
        let names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let position = |n: &str| names.iter().position(|x| *x == n);
        assert!(
            position("NODE_NAME") < position("NODECONFIG_CRI_ENDPOINT"),
            "NODE_NAME comes first, so $(NODE_NAME) expands: {names:?}"
        );
        let pod = ds.spec.template.spec.as_ref().expect("pod spec");
        let cri = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "cri-socket-dir")
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.as_str());
        assert_eq!(cri, Some("/run/nodeconfig-e2e/nodes"));
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "cri-socket-dir")
            .map(|m| m.mount_path.as_str());
        assert_eq!(mount, Some("/run/nodeconfig-e2e/nodes"));
    }

    #[test]
    fn an_api_server_address_replaces_the_kubernetes_service() {
        let ds = desired("ns", &Defaults::default());
        assert_eq!(env_value(container(&ds), "KUBERNETES_SERVICE_HOST"), None);
        let mut defaults = Defaults::default();
        defaults.agent.api_server = Some(ApiServer {
            host: "10.200.0.1".into(),
            port: 6443,
        });
        let ds = desired("ns", &defaults);
        let c = container(&ds);
        assert_eq!(env_value(c, "KUBERNETES_SERVICE_HOST"), Some("10.200.0.1"));
        assert_eq!(env_value(c, "KUBERNETES_SERVICE_PORT"), Some("6443"));
    }
}
