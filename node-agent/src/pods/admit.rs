//! Pod admission as the kubelet's `predicateAdmitHandler` does it: the pod's
//! OS, then the scheduler's admission check (the pod count and the cpu,
//! memory and ephemeral-storage requests against the node's allocatable, the
//! node selector and required node affinity against the node's labels, the
//! host ports against those of the pods already admitted), then `NoExecute`
//! taints against the pod's tolerations. The first failure is the reason,
//! with the kubelet's reason and message strings, so `kubectl describe`
//! reads the same.
//!
//! `NoSchedule` taints are the scheduler's: like the kubelet, a pod bound
//! directly (`spec.nodeName`) is admitted despite them.
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};

use crate::pods::cri_config::quantity::Amount;
use crate::pods::host_ports::ports_fit;
use crate::pods::pod_requests::{in_kubelet_units, pod_requests, CHECKED_RESOURCES};

/// Reason of a rejection for too many pods.
pub const REASON_OUT_OF_PODS: &str = "OutOfpods";
/// Prefix of the reason of a rejection for a resource the node lacks
/// (`OutOfcpu`, `OutOfmemory`, `OutOfephemeral-storage`).
pub const REASON_OUT_OF_PREFIX: &str = "OutOf";
/// Reason of a rejection by node selector or required node affinity.
pub const REASON_NODE_AFFINITY: &str = "NodeAffinity";
/// Reason of a rejection for a host port another pod on the node holds.
pub const REASON_NODE_PORTS: &str = "NodePorts";
/// Reason of a rejection by an untolerated `NoExecute` taint.
pub const REASON_TAINT_TOLERATION: &str = "TaintToleration";
/// Reason of a rejection for a `kubernetes.io/os` pod label of another OS.
pub const REASON_OS_SELECTOR: &str = "PodOSSelectorNodeLabelDoesNotMatch";
/// Reason of a rejection for `spec.os.name` of another OS.
pub const REASON_OS_NOT_SUPPORTED: &str = "PodOSNotSupported";

/// The reasons of the predicate handler, for counting rejected pods.
pub fn is_predicate_reason(reason: &str) -> bool {
    reason.starts_with(REASON_OUT_OF_PREFIX)
        || matches!(
            reason,
            REASON_NODE_AFFINITY
                | REASON_NODE_PORTS
                | REASON_TAINT_TOLERATION
                | REASON_OS_SELECTOR
                | REASON_OS_NOT_SUPPORTED
        )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// The pod ends `Failed` with this reason and message.
    Reject {
        reason: &'static str,
        message: String,
    },
}

impl Admission {
    /// This admission, or when it admits, the next handler's: the kubelet
    /// runs its admit handlers in turn and the first refusal stands.
    pub fn and_then(self, next: impl FnOnce() -> Admission) -> Admission {
        match self {
            Admission::Admit => next(),
            rejected => rejected,
        }
    }
}

/// Admits `pod` onto `node`, next to the pods already admitted there
/// (`admitted`; terminal ones and `pod` itself are not counted).
pub fn admit(pod: &Pod, node: &Node, admitted: &[Pod]) -> Admission {
    if let Some(rejected) = os_mismatch(pod) {
        return rejected;
    }
    let uid = pod.metadata.uid.as_deref();
    let others: Vec<&Pod> = admitted
        .iter()
        .filter(|p| p.metadata.uid.as_deref() != uid || uid.is_none())
        .filter(|p| !is_terminal(p))
        .collect();
    if let Some(rejected) = insufficient_resource(pod, node, &others) {
        return rejected;
    }
    if !matches_node_selector(pod, node) {
        return Admission::Reject {
            reason: REASON_NODE_AFFINITY,
            message:
                "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
                    .into(),
        };
    }
    if !ports_fit(pod, others.iter().copied()) {
        return Admission::Reject {
            reason: REASON_NODE_PORTS,
            message:
                "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
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

/// The kubelet's OS checks, which come before the predicates: the pod's
/// own `kubernetes.io/os` label (a quirk kept from upstream) against the
/// node's OS, which the kubelet takes as its own whatever the Node's label
/// says, and `spec.os.name`.
fn os_mismatch(pod: &Pod) -> Option<Admission> {
    const NODE_OS: &str = "linux";
    let pod_os = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"));
    if pod_os.is_some_and(|os| os != NODE_OS) {
        return Some(Admission::Reject {
            reason: REASON_OS_SELECTOR,
            message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
                .into(),
        });
    }
    let field_os = pod
        .spec
        .as_ref()
        .and_then(|s| s.os.as_ref())
        .map(|os| os.name.as_str());
    if field_os.is_some_and(|os| os != NODE_OS) {
        return Some(Admission::Reject {
            reason: REASON_OS_NOT_SUPPORTED,
            message: "Failed to admit pod as the OS field doesn't match node OS".into(),
        });
    }
    None
}

/// The scheduler's `noderesources.Fits`: the pod count, then each
/// requested resource against what the node's allocatable leaves beside
/// the other pods' requests.
fn insufficient_resource(pod: &Pod, node: &Node, others: &[&Pod]) -> Option<Admission> {
    let reject = |resource: &str, requested: i64, used: i64, capacity: i64| {
        Admission::Reject {
        reason: match resource {
            "pods" => REASON_OUT_OF_PODS,
            "cpu" => "OutOfcpu",
            "memory" => "OutOfmemory",
            _ => "OutOfephemeral-storage",
        },
        message: format!(
            "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
    };
    if let Some(capacity) = allocatable(node, "pods").map(|a| a.value_ceil()) {
        let used = others.len() as i64;
        if used + 1 > capacity {
            return Some(reject("pods", 1, used, capacity));
        }
    }
    let wanted = pod_requests(pod);
    let in_use: Vec<_> = others.iter().map(|p| pod_requests(p)).collect();
    for resource in CHECKED_RESOURCES {
        let requested = wanted
            .get(resource)
            .map_or(0, |a| in_kubelet_units(resource, *a));
        if requested <= 0 {
            continue;
        }
        // A node that does not report the resource is not checked for it.
        let Some(capacity) = allocatable(node, resource).map(|a| in_kubelet_units(resource, a))
        else {
            continue;
        };
        let used: i64 = in_use
            .iter()
            .filter_map(|r| r.get(resource))
            .map(|a| in_kubelet_units(resource, *a))
            .sum();
        if requested > capacity - used {
            return Some(reject(resource, requested, used, capacity));
        }
    }
    None
}

fn allocatable(node: &Node, resource: &str) -> Option<Amount> {
    let status = node.status.as_ref()?;
    let quantity = status
        .allocatable
        .as_ref()
        .or(status.capacity.as_ref())?
        .get(resource)?;
    Amount::of(quantity)
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
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
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

    fn sized_node(cpu: &str, memory: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "nc-node-1"},
            "status": {"allocatable": {"pods": "110", "cpu": cpu, "memory": memory}},
        }))
        .unwrap()
    }

    fn requesting(uid: &str, cpu: &str, memory: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": uid, "uid": uid}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
            "status": {"phase": "Running"}}))
        .unwrap()
    }

    #[test]
    fn requests_over_what_the_node_has_left_are_refused_with_the_kubelets_reason() {
        let node = sized_node("2", "1Gi");
        let others = [requesting("a", "1500m", "512Mi")];
        assert_eq!(
            admit(&requesting("new", "400m", "256Mi"), &node, &others),
            Admission::Admit
        );
        assert_eq!(
            admit(&requesting("new", "600m", "64Mi"), &node, &others),
            Admission::Reject {
                reason: "OutOfcpu",
                message: "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000".into()
            }
        );
        assert_eq!(
            admit(&requesting("new", "100m", "600Mi"), &node, &others),
            Admission::Reject {
                reason: "OutOfmemory",
                message: format!(
                    "Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
                    600 << 20,
                    512 << 20,
                    1 << 30
                )
            }
        );
        // A finished pod's requests are free again.
        let mut done = requesting("a", "1500m", "512Mi");
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(
            admit(&requesting("new", "600m", "64Mi"), &node, &[done]),
            Admission::Admit
        );
    }

    #[test]
    fn a_host_port_held_by_an_admitted_pod_is_refused() {
        let with_port = |uid: &str, port: i32| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": uid, "uid": uid}, "spec": {"containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": port}]}]},
                "status": {"phase": "Running"}}),
            )
            .unwrap()
        };
        let node = node(json!({}), json!([]), "10");
        let others = [with_port("a", 21017)];
        assert_eq!(
            admit(&with_port("new", 21017), &node, &others),
            Admission::Reject {
                reason: "NodePorts",
                message: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".into()
            }
        );
        assert_eq!(
            admit(&with_port("new", 21018), &node, &others),
            Admission::Admit
        );
        // The pod itself (already admitted before a restart) holds no port against itself.
        assert_eq!(
            admit(&with_port("a", 21017), &node, &others),
            Admission::Admit
        );
    }

    #[test]
    fn pods_of_another_os_are_refused() {
        let node = node(json!({}), json!([]), "10");
        let labelled: Pod = serde_json::from_value(json!({"metadata": {"name": "p",
            "labels": {"kubernetes.io/os": "windows"}}, "spec": {"containers": []}}))
        .unwrap();
        assert_eq!(
            reason(&admit(&labelled, &node, &[])),
            Some(REASON_OS_SELECTOR)
        );
        let field = pod(json!({"containers": [], "os": {"name": "windows"}}));
        assert_eq!(
            reason(&admit(&field, &node, &[])),
            Some(REASON_OS_NOT_SUPPORTED)
        );
        let linux = pod(json!({"containers": [], "os": {"name": "linux"}}));
        assert_eq!(admit(&linux, &node, &[]), Admission::Admit);
    }

    #[test]
    fn the_first_refusing_handler_stands() {
        let refuse = |reason| Admission::Reject {
            reason,
            message: String::new(),
        };
        assert_eq!(Admission::Admit.and_then(|| refuse("B")), refuse("B"));
        assert_eq!(refuse("A").and_then(|| refuse("B")), refuse("A"));
        assert!(is_predicate_reason("OutOfcpu") && is_predicate_reason("NodePorts"));
        assert!(!is_predicate_reason("SysctlForbidden"));
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
