//! Pod admission as the kubelet's `predicateAdmitHandler` does it: the pod
//! count against the node's allocatable `pods`, the node selector and required
//! node affinity against the node's labels, then `NoExecute` taints against
//! the pod's tolerations. The first failure is the reason, with the kubelet's
//! reason and message strings, so `kubectl describe` reads the same.
//!
//! `NoSchedule` taints are the scheduler's: like the kubelet, a pod bound
//! directly (`spec.nodeName`) is admitted despite them.
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};

/// Reason of a rejection for too many pods.
pub const REASON_OUT_OF_PODS: &str = "OutOfpods";
/// Reason of a rejection by node selector or required node affinity.
pub const REASON_NODE_AFFINITY: &str = "NodeAffinity";
/// Reason of a rejection by an untolerated `NoExecute` taint.
pub const REASON_TAINT_TOLERATION: &str = "TaintToleration";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// The pod ends `Failed` with this reason and message.
    Reject {
        reason: &'static str,
        message: String,
    },
}

/// Admits `pod` onto `node`, next to the pods already admitted there
/// (`admitted`; terminal ones and `pod` itself are not counted).
pub fn admit(pod: &Pod, node: &Node, admitted: &[Pod]) -> Admission {
    if let Some(capacity) = allocatable_pods(node) {
        let uid = pod.metadata.uid.as_deref();
        let used = admitted
            .iter()
            .filter(|p| p.metadata.uid.as_deref() != uid || uid.is_none())
            .filter(|p| !is_terminal(p))
            .count() as i64;
        if used + 1 > capacity {
            return Admission::Reject {
                reason: REASON_OUT_OF_PODS,
                message: format!(
                    "Node didn't have enough resource: pods, requested: 1, used: {used}, capacity: {capacity}"
                ),
            };
        }
    }
    if !matches_node_selector(pod, node) {
        return Admission::Reject {
            reason: REASON_NODE_AFFINITY,
            message:
                "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
                    .into(),
        };
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    if taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        return Admission::Reject {
            reason: REASON_TAINT_TOLERATION,
            message:
                "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
                    .into(),
        };
    }
    Admission::Admit
}

fn allocatable_pods(node: &Node) -> Option<i64> {
    let status = node.status.as_ref()?;
    let quantity = status
        .allocatable
        .as_ref()
        .or(status.capacity.as_ref())?
        .get("pods")?;
    quantity.0.parse().ok()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// `spec.nodeSelector` (all must match) and the required node affinity (any term; within a term, all).
fn matches_node_selector(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let empty = Default::default();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok = required.is_none_or(|sel| {
        sel.node_selector_terms.iter().any(|term| {
            let exprs = term.match_expressions.as_deref().unwrap_or_default();
            let fields = term.match_fields.as_deref().unwrap_or_default();
            // An empty term matches nothing, as in the scheduler.
            (!exprs.is_empty() || !fields.is_empty())
                && exprs
                    .iter()
                    .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
                && fields.iter().all(|r| {
                    let value = node
                        .metadata
                        .name
                        .as_deref()
                        .filter(|_| r.key == "metadata.name");
                    requirement_matches(r, value)
                })
        })
    });
    selector_ok && affinity_ok
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|b| number(b)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// The API's `Toleration.ToleratesTaint`.
fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or("");
    let exists = tol.operator.as_deref() == Some("Exists");
    if key.is_empty() {
        return exists; // an empty key with Exists tolerates everything
    }
    if key != taint.key {
        return false;
    }
    exists || tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "uid-new"}, "spec": spec}))
            .unwrap()
    }

    fn node(labels: serde_json::Value, taints: serde_json::Value, max_pods: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "nc-node-1", "labels": labels},
            "spec": {"taints": taints},
            "status": {"allocatable": {"pods": max_pods}},
        }))
        .unwrap()
    }

    fn running(uid: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"uid": uid}, "spec": {"containers": []}, "status": {"phase": phase}}))
            .unwrap()
    }

    fn reason(a: &Admission) -> Option<&'static str> {
        match a {
            Admission::Admit => None,
            Admission::Reject { reason, .. } => Some(reason),
        }
    }

    /// (case, pod spec, node taints, pods already on the node, expected rejection reason)
    type Case = (
        &'static str,
        serde_json::Value,
        serde_json::Value,
        Vec<Pod>,
        Option<&'static str>,
    );

    #[test]
    fn admission_table() {
        let base = || json!({"containers": [{"name": "app", "image": "busybox"}]});
        let with = |extra: serde_json::Value| {
            let mut s = base();
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let labels = json!({"disk": "ssd", "zone": "a", "cores": "8"});
        let cases: Vec<Case> = vec![
            (
                "plain pod on an empty node",
                base(),
                json!([]),
                vec![],
                None,
            ),
            (
                "full node",
                base(),
                json!([]),
                vec![running("a", "Running"), running("b", "Pending")],
                Some(REASON_OUT_OF_PODS),
            ),
            (
                "terminal pods and the pod itself are not counted",
                base(),
                json!([]),
                vec![
                    running("a", "Running"),
                    running("b", "Succeeded"),
                    running("uid-new", "Pending"),
                ],
                None,
            ),
            (
                "node selector matches",
                with(json!({"nodeSelector": {"disk": "ssd"}})),
                json!([]),
                vec![],
                None,
            ),
            (
                "node selector does not match",
                with(json!({"nodeSelector": {"disk": "hdd"}})),
                json!([]),
                vec![],
                Some(REASON_NODE_AFFINITY),
            ),
            (
                "required affinity: second term matches",
                with(
                    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                        {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]},
                                              {"key": "gpu", "operator": "DoesNotExist"}]}
                    ]}}}}),
                ),
                json!([]),
                vec![],
                None,
            ),
            (
                "required affinity by node name (matchFields)",
                with(
                    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["nc-node-2"]}]}
                    ]}}}}),
                ),
                json!([]),
                vec![],
                Some(REASON_NODE_AFFINITY),
            ),
            (
                "NoExecute taint without toleration",
                base(),
                json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]),
                vec![],
                Some(REASON_TAINT_TOLERATION),
            ),
            (
                "NoExecute taint tolerated by key and value",
                with(
                    json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute"}]}),
                ),
                json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]),
                vec![],
                None,
            ),
            (
                "toleration with another value does not tolerate",
                with(json!({"tolerations": [{"key": "dedicated", "value": "web"}]})),
                json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]),
                vec![],
                Some(REASON_TAINT_TOLERATION),
            ),
            (
                "empty key with Exists tolerates everything",
                with(json!({"tolerations": [{"operator": "Exists"}]})),
                json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]),
                vec![],
                None,
            ),
            (
                "NoSchedule is the scheduler's, the kubelet admits",
                base(),
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
                vec![],
                None,
            ),
            (
                "the pod count is checked first",
                with(json!({"nodeSelector": {"disk": "hdd"}})),
                json!([]),
                vec![running("a", "Running"), running("b", "Running")],
                Some(REASON_OUT_OF_PODS),
            ),
        ];
        for (name, spec, taints, others, want) in cases {
            let got = admit(&pod(spec), &node(labels.clone(), taints, "2"), &others);
            assert_eq!(reason(&got), want, "{name}: {got:?}");
        }
    }

    #[test]
    fn out_of_pods_message_is_the_kubelets() {
        let got = admit(
            &pod(json!({"containers": []})),
            &node(json!({}), json!([]), "1"),
            &[running("a", "Running")],
        );
        assert_eq!(
            got,
            Admission::Reject {
                reason: "OutOfpods",
                message:
                    "Node didn't have enough resource: pods, requested: 1, used: 1, capacity: 1"
                        .into()
            }
        );
    }
}
