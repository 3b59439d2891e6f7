//! The NodeConfig API as a user meets it: defaults, serialisation, and the generated CRD.

use nodeconfig_crds::crd::{crd_yaml, CRD_FILE};
use nodeconfig_crds::{NodeConfig, NodeConfigSpec, NodeMode, ProxyMode};
use serde_json::json;

#[test]
fn minimal_spec_gets_defaults() {
    let spec: NodeConfigSpec = serde_json::from_value(json!({"nodeName": "worker-1"})).unwrap();
    assert_eq!(spec.mode, NodeMode::Companion);
    assert!(!spec.paused);
    assert_eq!(
        spec.runtime.cri_endpoint,
        "unix:///run/containerd/containerd.sock"
    );
    assert_eq!(spec.pods.max_pods, 110);
    assert!(spec.proxy.enabled);
    assert_eq!(spec.proxy.mode, ProxyMode::Iptables);
    assert_eq!(spec.proxy.sync_period, "30s");
    assert_eq!(spec.proxy.min_sync_period, "1s");
    assert_eq!(spec, NodeConfigSpec::for_node("worker-1"));
}

#[test]
fn spec_serialises_with_kubernetes_field_names() {
    let mut spec = NodeConfigSpec::for_node("worker-1");
    spec.mode = NodeMode::Kubelet;
    spec.pods.pod_cidr = Some("10.244.1.0/24".into());
    spec.proxy.cluster_cidr = Some("10.244.0.0/16".into());
    let value = serde_json::to_value(&spec).unwrap();
    assert_eq!(value["mode"], "Kubelet");
    assert_eq!(value["pods"]["podCIDR"], "10.244.1.0/24");
    assert_eq!(value["proxy"]["clusterCIDR"], "10.244.0.0/16");
    assert_eq!(value["proxy"]["mode"], "iptables");
    assert_eq!(
        value["runtime"]["criEndpoint"],
        "unix:///run/containerd/containerd.sock"
    );
}

#[test]
fn nodeconfig_round_trips_through_json_and_yaml() {
    let doc = r#"
apiVersion: nodeconfig.dev/v1alpha1
kind: NodeConfig
metadata:
  name: worker-2
spec:
  nodeName: worker-2
  mode: Kubelet
  paused: true
  pods:
    maxPods: 30
    labels: {rack: r1}
    taints: [{key: dedicated, value: infra, effect: NoSchedule}]
  proxy:
    syncPeriod: 1m
    minSyncPeriod: 500ms
    nodePortAddresses: [10.0.0.0/8]
status:
  observedGeneration: 3
  conditions:
  - type: Ready
    status: "True"
    reason: AgentReady
    message: all loops healthy
    lastTransitionTime: "2026-11-29T10:00:00Z"
  pods: {summary: 2/3, desired: 3, running: 2, pending: 1, failed: 0, restarts: 4}
"#;
    let nc: NodeConfig = serde_yaml::from_str(doc).unwrap();
    assert_eq!(nc.spec.pods.taints[0].key, "dedicated");
    assert_eq!(nc.status.as_ref().unwrap().conditions[0].type_, "Ready");
    let again: NodeConfig = serde_json::from_value(serde_json::to_value(&nc).unwrap()).unwrap();
    assert_eq!(nc, again);
    let again: NodeConfig = serde_yaml::from_str(&serde_yaml::to_string(&nc).unwrap()).unwrap();
    assert_eq!(nc, again);
}

#[test]
fn unknown_mode_is_rejected() {
    let err =
        serde_json::from_value::<NodeConfigSpec>(json!({"nodeName": "n", "mode": "Kubeproxy"}));
    assert!(err.is_err());
}

#[test]
fn checked_in_crd_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRD_FILE);
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == crd_yaml().unwrap(),
        "{CRD_FILE} is stale: run `cargo run -p nodeconfig-crds --bin crdgen -- --write` and commit it"
    );
}

#[test]
fn crd_keys_conditions_by_type_for_server_side_apply() {
    let crd: serde_json::Value = serde_yaml::from_str(&crd_yaml().unwrap()).unwrap();
    let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"]["status"],
        json!({})
    );
}
