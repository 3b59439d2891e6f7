//! What the operator wants of one Node's NodeConfig: the server-side apply patch, and whether to
//! send it, leave things be, or delete.
//!
//! The patch names only the fields the operator owns (owner reference, its label, `nodeName`,
//! `mode` and the defaults' `spec` fields), so a person's edit of any other field survives, and a
//! field dropped from the defaults is released (the API server then defaults it again).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use nodeconfig_crds::{NodeConfig, NodeMode};
use serde_json::{json, Value};

use crate::defaults::Defaults;

/// Field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "nodeconfig-operator";
/// Label the operator puts on the NodeConfigs it makes; it deletes only NodeConfigs that carry it.
pub const MANAGED_BY_LABEL: &str = "nodeconfig.dev/managed-by";
/// Nodes registered by node-agent carry this label with value `true`; they get mode Kubelet.
pub const AGENT_MANAGED_LABEL: &str = "nodeconfig.dev/agent-managed";

/// The status apply patch that carries only `condition`, so the agent's other conditions and
/// fields stay the agent's (and the operator's other conditions their field manager's).
pub fn condition_patch(name: &str, condition: &Condition) -> Value {
    json!({
        "apiVersion": NodeConfig::api_version(&()),
        "kind": NodeConfig::kind(&()),
        "metadata": { "name": name },
        "status": { "conditions": [condition] },
    })
}

/// What the operator knows of a Node: its metadata, stripped of everything else.
#[derive(Clone, Copy, Debug)]
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// What to do about one Node's NodeConfig.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeConfigPlan {
    /// Server-side apply `patch`; remember `fingerprint` once it succeeded.
    Apply { patch: Value, fingerprint: u64 },
    /// The NodeConfig already holds what this operator last applied.
    UpToDate,
    /// The Node no longer matches the node selector: delete the NodeConfig the operator made.
    Delete { uid: String },
    /// The Node is not selected and has no NodeConfig of the operator's; nothing to do.
    Ignore,
}

/// `Kubelet` for Nodes that node-agent registered, `Companion` for every other Node.
pub fn node_mode(labels: &BTreeMap<String, String>) -> NodeMode {
    if labels.get(AGENT_MANAGED_LABEL).map(String::as_str) == Some("true") {
        NodeMode::Kubelet
    } else {
        NodeMode::Companion
    }
}

/// Whether a Node's labels carry every label of the node selector.
pub fn is_selected(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The server-side apply patch of a Node's NodeConfig.
pub fn desired(node: &NodeFacts<'_>, defaults: &Defaults) -> Value {
    let mut spec = defaults.spec.clone();
    spec.insert("nodeName".into(), Value::String(node.name.to_string()));
    spec.insert(
        "mode".into(),
        serde_json::to_value(node_mode(node.labels)).unwrap_or(Value::Null),
    );
    json!({
        "apiVersion": NodeConfig::api_version(&()),
        "kind": NodeConfig::kind(&()),
        "metadata": {
            "name": node.name,
            "labels": { MANAGED_BY_LABEL: FIELD_MANAGER },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": node.name,
                "uid": node.uid,
                "controller": false,
                "blockOwnerDeletion": false,
            }],
        },
        "spec": spec,
    })
}

/// Decides what to do about `node`'s NodeConfig, given the NodeConfig in the cache and the
/// fingerprint of the last patch this operator applied to it (none after a restart or a change
/// of leader, so every NodeConfig is applied once per leadership term).
pub fn plan(
    node: &NodeFacts<'_>,
    defaults: &Defaults,
    existing: Option<&NodeConfig>,
    last_applied: Option<u64>,
) -> NodeConfigPlan {
    let being_deleted = existing.is_some_and(|nc| nc.metadata.deletion_timestamp.is_some());
    if !is_selected(node.labels, &defaults.node_selector) {
        return match existing {
            Some(nc) if !being_deleted && is_ours(nc) => NodeConfigPlan::Delete {
                uid: nc.metadata.uid.clone().unwrap_or_default(),
            },
            _ => NodeConfigPlan::Ignore,
        };
    }
    if being_deleted {
        // It goes away first; its deletion triggers another reconcile that makes it anew.
        return NodeConfigPlan::UpToDate;
    }
    let patch = desired(node, defaults);
    let fingerprint = fingerprint(&patch);
    let holds_patch = existing
        .and_then(|nc| serde_json::to_value(nc).ok())
        .is_some_and(|actual| holds(&actual, &patch));
    if holds_patch && last_applied == Some(fingerprint) {
        NodeConfigPlan::UpToDate
    } else {
        NodeConfigPlan::Apply { patch, fingerprint }
    }
}

fn is_ours(nc: &NodeConfig) -> bool {
    nc.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(FIELD_MANAGER)
}

fn fingerprint(patch: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    patch.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Whether `actual` holds every value of `wanted`: objects by key, lists by equality, except
/// `ownerReferences`, a list keyed by uid, where each wanted entry must be among the actual ones.
fn holds(actual: &Value, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Value::Object(actual), Value::Object(wanted)) => {
            wanted
                .iter()
                .all(|(key, w)| match (key.as_str(), actual.get(key)) {
                    ("ownerReferences", Some(Value::Array(refs))) => match w {
                        Value::Array(wanted_refs) => wanted_refs
                            .iter()
                            .all(|wr| refs.iter().any(|r| holds(r, wr))),
                        _ => false,
                    },
                    (_, Some(a)) => holds(a, w),
                    (_, None) => false,
                })
        }
        _ => actual == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn defaults(selector: &[(&str, &str)], spec: Value) -> Defaults {
        let Value::Object(spec) = spec else {
            panic!("spec must be an object")
        };
        Defaults {
            node_selector: labels(selector),
            spec,
            ..Defaults::default()
        }
    }

    /// The NodeConfig as the API server returns it after `patch` was applied and `edit` merged in.
    fn stored(patch: &Value, edit: Value) -> NodeConfig {
        let mut obj = patch.clone();
        obj["metadata"]["uid"] = json!("nc-uid");
        merge(&mut obj, &edit);
        // Deserializing fills the schema's defaults, as the API server does.
        serde_json::from_value(obj).expect("a NodeConfig")
    }

    fn merge(into: &mut Value, from: &Value) {
        match (into, from) {
            (Value::Object(into), Value::Object(from)) => {
                for (k, v) in from {
                    merge(into.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (into, from) => *into = from.clone(),
        }
    }

    #[test]
    fn mode_follows_the_agent_managed_label() {
        let cases = [
            (labels(&[]), NodeMode::Companion),
            (labels(&[(AGENT_MANAGED_LABEL, "true")]), NodeMode::Kubelet),
            (
                labels(&[(AGENT_MANAGED_LABEL, "false")]),
                NodeMode::Companion,
            ),
            (labels(&[(AGENT_MANAGED_LABEL, "yes")]), NodeMode::Companion),
        ];
        for (node_labels, mode) in cases {
            assert_eq!(node_mode(&node_labels), mode, "{node_labels:?}");
        }
    }

    #[test]
    fn selector_is_match_labels() {
        let cases = [
            (&[][..], &[][..], true),
            (&[("role", "edge")][..], &[][..], true),
            (&[("role", "edge")][..], &[("role", "edge")][..], true),
            (&[("role", "core")][..], &[("role", "edge")][..], false),
            (&[][..], &[("role", "edge")][..], false),
            (
                &[("role", "edge")][..],
                &[("role", "edge"), ("zone", "a")][..],
                false,
            ),
        ];
        for (node, selector, want) in cases {
            assert_eq!(
                is_selected(&labels(node), &labels(selector)),
                want,
                "{node:?} vs {selector:?}"
            );
        }
    }

    #[test]
    fn patch_names_only_the_operators_fields() {
        let node_labels = labels(&[(AGENT_MANAGED_LABEL, "true")]);
        let node = NodeFacts {
            name: "n1",
            uid: "uid-1",
            labels: &node_labels,
        };
        let patch = desired(
            &node,
            &defaults(&[], json!({"proxy": {"syncPeriod": "10s"}})),
        );
        assert_eq!(
            patch,
            json!({
                "apiVersion": "nodeconfig.dev/v1alpha1",
                "kind": "NodeConfig",
                "metadata": {
                    "name": "n1",
                    "labels": {"nodeconfig.dev/managed-by": "nodeconfig-operator"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-1", "controller": false, "blockOwnerDeletion": false}],
                },
                "spec": {"nodeName": "n1", "mode": "Kubelet", "proxy": {"syncPeriod": "10s"}},
            })
        );
    }

    /// (name, node, defaults, cached NodeConfig, last applied fingerprint, expected plan)
    type PlanCase<'a> = (
        &'a str,
        NodeFacts<'a>,
        &'a Defaults,
        Option<&'a NodeConfig>,
        Option<u64>,
        NodeConfigPlan,
    );

    #[test]
    fn plans() {
        let plain = labels(&[]);
        let edge = labels(&[("role", "edge")]);
        let node = |l| NodeFacts {
            name: "n1",
            uid: "uid-1",
            labels: l,
        };
        let d = defaults(&[], json!({"proxy": {"syncPeriod": "10s"}}));
        let patch = desired(&node(&plain), &d);
        let fp = fingerprint(&patch);
        let applied = stored(&patch, json!({}));
        let edited = stored(&patch, json!({"spec": {"paused": true}}));
        let drifted = stored(&patch, json!({"spec": {"proxy": {"syncPeriod": "99s"}}}));
        let other_owner_too = stored(
            &patch,
            json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-1", "controller": false, "blockOwnerDeletion": false},
            {"apiVersion": "example.com/v1", "kind": "Thing", "name": "t", "uid": "uid-t"}]}}),
        );
        let mut deleting = applied.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let mut by_hand = applied.clone();
        by_hand.metadata.labels = None;
        let only_edge = defaults(&[("role", "edge")], json!({}));
        let apply = NodeConfigPlan::Apply {
            patch: patch.clone(),
            fingerprint: fp,
        };

        let cases: Vec<PlanCase<'_>> = vec![
            ("new node", node(&plain), &d, None, None, apply.clone()),
            (
                "applied before",
                node(&plain),
                &d,
                Some(&applied),
                Some(fp),
                NodeConfigPlan::UpToDate,
            ),
            (
                "a person's edit of another field",
                node(&plain),
                &d,
                Some(&edited),
                Some(fp),
                NodeConfigPlan::UpToDate,
            ),
            (
                "another owner reference too",
                node(&plain),
                &d,
                Some(&other_owner_too),
                Some(fp),
                NodeConfigPlan::UpToDate,
            ),
            (
                "new leader applies once",
                node(&plain),
                &d,
                Some(&applied),
                None,
                apply.clone(),
            ),
            (
                "defaults changed",
                node(&plain),
                &d,
                Some(&applied),
                Some(fp ^ 1),
                apply.clone(),
            ),
            (
                "someone changed an owned field",
                node(&plain),
                &d,
                Some(&drifted),
                Some(fp),
                apply.clone(),
            ),
            (
                "being deleted",
                node(&plain),
                &d,
                Some(&deleting),
                Some(fp),
                NodeConfigPlan::UpToDate,
            ),
            (
                "stops matching",
                node(&plain),
                &only_edge,
                Some(&applied),
                Some(fp),
                NodeConfigPlan::Delete {
                    uid: "nc-uid".into(),
                },
            ),
            (
                "not matching, none",
                node(&plain),
                &only_edge,
                None,
                None,
                NodeConfigPlan::Ignore,
            ),
            (
                "not matching, made by hand",
                node(&plain),
                &only_edge,
                Some(&by_hand),
                None,
                NodeConfigPlan::Ignore,
            ),
            (
                "not matching, already going",
                node(&plain),
                &only_edge,
                Some(&deleting),
                None,
                NodeConfigPlan::Ignore,
            ),
        ];
        for (name, node, defaults, existing, last, want) in cases {
            assert_eq!(plan(&node, defaults, existing, last), want, "{name}");
        }
        let matching = plan(&node(&edge), &only_edge, None, None);
        assert!(
            matches!(matching, NodeConfigPlan::Apply { .. }),
            "a matching node gets a NodeConfig"
        );
    }

    #[test]
    fn dropping_a_default_changes_the_patch() {
        let node_labels = labels(&[]);
        let node = NodeFacts {
            name: "n1",
            uid: "u",
            labels: &node_labels,
        };
        let with = desired(&node, &defaults(&[], json!({"paused": false})));
        let without = desired(&node, &defaults(&[], json!({})));
        assert_ne!(fingerprint(&with), fingerprint(&without));
        assert!(without["spec"]
            .as_object()
            .is_some_and(|s| !s.contains_key("paused")));
    }
}
