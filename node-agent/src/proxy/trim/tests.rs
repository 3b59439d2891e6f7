use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use k8s_openapi::api::discovery::v1::{
    Endpoint as K8sEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::proxy::model::{service_ports, slice_endpoints, Model};

/// A Service as the API server returns one created with `kubectl apply`.
fn api_service(i: usize) -> Service {
    let name = format!("svc-{i}");
    let spec = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": name, "bench": "proxy"}},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    });
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": name, "namespace": "bench", "uid": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
            "resourceVersion": "1234567", "creationTimestamp": "2026-11-29T22:43:00Z",
            "labels": {"app": name, "bench": "proxy"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": spec.to_string()},
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                "apiVersion": "v1", "time": "2026-11-29T22:43:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                    "f:labels": {".": {}, "f:app": {}, "f:bench": {}}},
                    "f:spec": {"f:internalTrafficPolicy": {}, "f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {
                        ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                    "f:sessionAffinity": {}, "f:type": {}}}}]
        },
        "spec": {
            "clusterIP": format!("10.96.{}.{}", i / 250, 1 + i % 250),
            "clusterIPs": [format!("10.96.{}.{}", i / 250, 1 + i % 250)],
            "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app": name}, "sessionAffinity": "None", "type": "ClusterIP"
        },
        "status": {"loadBalancer": {}}
    }))
    .expect("a valid Service")
}

/// An EndpointSlice as the EndpointSlice controller writes one: 2 pods.
fn api_slice(i: usize) -> EndpointSlice {
    let name = format!("svc-{i}");
    let endpoint = |base: usize, node: usize| {
        json!({
            "addresses": [format!("10.{base}.{}.{}", i / 256, i % 256)],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": format!("node-{node}"), "zone": "zone-a",
            "hints": {"forZones": [{"name": "zone-a"}]},
            "targetRef": {"kind": "Pod", "namespace": "bench", "name": format!("{name}-7d9f8b6c5-x{node}k2p"),
                "uid": "1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809"}
        })
    };
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-abcde"), "namespace": "bench", "generateName": format!("{name}-"),
            "uid": "2b3c4d5e-6f70-8192-a3b4-c5d6e7f8091a", "resourceVersion": "1234568", "generation": 1,
            "creationTimestamp": "2026-11-29T22:43:00Z",
            "labels": {"app": name, "bench": "proxy", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": name},
            "annotations": {TRIGGER_TIME_ANNOTATION: "2026-11-29T22:43:00Z"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "controller": true,
                "blockOwnerDeletion": true, "uid": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "discovery.k8s.io/v1", "time": "2026-11-29T22:43:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:addressType": {}, "f:endpoints": {}, "f:metadata": {"f:annotations": {}, "f:generateName": {},
                    "f:labels": {}, "f:ownerReferences": {}}, "f:ports": {}}}]
        },
        "addressType": "IPv4",
        "endpoints": [endpoint(128, 1), endpoint(192, 2)],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("a valid EndpointSlice")
}

fn trimmed<T: Clone>(obj: &T, trim: fn(&mut T)) -> T {
    let mut copy = obj.clone();
    trim(&mut copy);
    copy
}

#[test]
fn trimmed_objects_keep_what_the_model_reads_and_the_trigger_time() {
    let (svc, slice) = (api_service(7), api_slice(7));
    let (s, e) = (trimmed(&svc, trim_service), trimmed(&slice, trim_slice));
    assert_eq!(service_ports(&s), service_ports(&svc));
    assert_eq!(slice_endpoints(&e), slice_endpoints(&slice));
    assert_eq!(
        Model::build([&s], [&e]),
        Model::build([&svc], [&slice]),
        "same model"
    );
    assert!(s.metadata.annotations.is_none(), "last-applied is gone");
    assert!(s.metadata.labels.is_none() && s.status.is_none());
    assert!(s.spec.as_ref().unwrap().selector.is_none());
    assert_eq!(
        e.metadata.annotations.as_ref().unwrap()[TRIGGER_TIME_ANNOTATION],
        "2026-11-29T22:43:00Z"
    );
    assert_eq!(e.metadata.labels.as_ref().unwrap().len(), 1);
    assert!(e.metadata.managed_fields.is_none() && e.metadata.owner_references.is_none());
    assert!(e.endpoints.as_ref().unwrap()[0].target_ref.is_none());
}

fn arb_service() -> impl Strategy<Value = Service> {
    let port = (
        proptest::option::of(proptest::sample::select(vec!["", "http", "dns"])),
        -1i32..70000,
        proptest::option::of(proptest::sample::select(vec!["TCP", "UDP", "SCTP", "ICMP"])),
        proptest::option::of(-1i32..70000),
    )
        .prop_map(|(name, port, protocol, node_port)| K8sServicePort {
            name: name.map(Into::into),
            port,
            protocol: protocol.map(Into::into),
            node_port,
            app_protocol: Some("http".into()),
            ..Default::default()
        });
    let pick = |v: Vec<&'static str>| proptest::option::of(proptest::sample::select(v));
    (
        (
            pick(vec![
                "ClusterIP",
                "NodePort",
                "LoadBalancer",
                "ExternalName",
            ]),
            pick(vec!["None", "", "10.96.0.1", "fd00::1", "bad"]),
            proptest::option::of(proptest::collection::vec(
                proptest::sample::select(vec!["10.96.0.2", "fd00::2", "0.0.0.0"]),
                0..3,
            )),
            pick(vec!["ClientIP", "None"]),
            proptest::option::of(proptest::option::of(-5i32..100_000)),
        ),
        (
            pick(vec!["Local", "Cluster"]),
            pick(vec!["Local", "Cluster"]),
            proptest::option::of(proptest::collection::vec(port, 0..3)),
            pick(vec!["other", "none"]),
        ),
    )
        .prop_map(
            |((type_, ip, ips, affinity, timeout), (itp, etp, ports, proxy))| {
                let mut labels = BTreeMap::from([("app".to_string(), "x".to_string())]);
                if let Some(p) = proxy.filter(|p| *p != "none") {
                    labels.insert(SERVICE_PROXY_NAME_LABEL.into(), p.into());
                }
                let mut svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": "s", "namespace": "n", "uid": "u", "labels": labels,
                        "annotations": {"a": "b"}},
                    "status": {"loadBalancer": {}}
                }))
                .unwrap();
                svc.spec = Some(ServiceSpec {
                    type_: type_.map(Into::into),
                    cluster_ip: ip.map(Into::into),
                    cluster_ips: ips.map(|v| v.into_iter().map(Into::into).collect()),
                    session_affinity: affinity.map(Into::into),
                    session_affinity_config: timeout.map(|t| SessionAffinityConfig {
                        client_ip: Some(ClientIPConfig { timeout_seconds: t }),
                    }),
                    internal_traffic_policy: itp.map(Into::into),
                    external_traffic_policy: etp.map(Into::into),
                    ports,
                    selector: Some(BTreeMap::from([("app".into(), "x".into())])),
                    ..Default::default()
                });
                svc
            },
        )
}

fn arb_slice() -> impl Strategy<Value = EndpointSlice> {
    let endpoint = (
        proptest::collection::vec(
            proptest::sample::select(vec!["10.1.0.1", "10.1.0.2", "fd00::1", "junk"]),
            0..3,
        ),
        proptest::option::of((
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        )),
        proptest::option::of(proptest::sample::select(vec!["node-a", "node-b"])),
    )
        .prop_map(|(addresses, conditions, node)| K8sEndpoint {
            addresses: addresses.into_iter().map(Into::into).collect(),
            conditions: conditions.map(|(ready, serving, terminating)| EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            node_name: node.map(Into::into),
            zone: Some("zone-a".into()),
            hostname: Some("h".into()),
            ..Default::default()
        });
    let port = (
        proptest::option::of(proptest::sample::select(vec!["", "http"])),
        proptest::option::of(-1i32..70000),
        proptest::option::of(proptest::sample::select(vec!["TCP", "UDP", "ICMP"])),
    )
        .prop_map(|(name, port, protocol)| EndpointPort {
            name: name.map(Into::into),
            port,
            protocol: protocol.map(Into::into),
            app_protocol: Some("http".into()),
        });
    (
        any::<bool>(),
        proptest::sample::select(vec!["IPv4", "IPv6", "FQDN"]),
        proptest::option::of(proptest::collection::vec(endpoint, 0..4)),
        proptest::option::of(proptest::collection::vec(port, 0..3)),
    )
        .prop_map(|(labelled, address_type, endpoints, ports)| {
            let mut labels = BTreeMap::from([("app".to_string(), "x".to_string())]);
            if labelled {
                labels.insert(SERVICE_NAME_LABEL.into(), "s".into());
            }
            let mut slice: EndpointSlice = serde_json::from_value(json!({
                "metadata": {"name": "s-1", "namespace": "n", "labels": labels,
                    "annotations": {TRIGGER_TIME_ANNOTATION: "2026-01-01T00:00:00Z", "x": "y"}},
                "addressType": address_type, "endpoints": []
            }))
            .unwrap();
            slice.endpoints = endpoints;
            slice.ports = ports;
            slice
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a Service or EndpointSlice holds, the model (and so every rule)
    /// built from its trimmed copy is the same, skips included.
    #[test]
    fn trimming_never_changes_the_model(svc in arb_service(), slice in arb_slice()) {
        let (s, e) = (trimmed(&svc, trim_service), trimmed(&slice, trim_slice));
        prop_assert_eq!(service_ports(&s), service_ports(&svc));
        prop_assert_eq!(slice_endpoints(&e), slice_endpoints(&slice));
        // Trimming twice changes nothing more.
        prop_assert_eq!(trimmed(&s, trim_service), s);
        prop_assert_eq!(trimmed(&e, trim_slice), e);
    }
}

/// Resident memory of this process, in bytes.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `NC_FOOTPRINT=<variant>`: this process fills the watch stores that way.
const FOOTPRINT_VARIANT: &str = "NC_FOOTPRINT";
const FOOTPRINT_SERVICES: usize = 10_000;

/// Fills reflector stores (the proxy loop's store types) with 10,000 Services
/// and their EndpointSlices, as the API server sends them, and returns the
/// growth of the resident set.
fn fill_stores(variant: &str) -> usize {
    use kube::runtime::{reflector, watcher};
    let before = rss_bytes();
    let (services, mut service_writer) = reflector::store::<Service>();
    let (slices, mut slice_writer) = reflector::store::<EndpointSlice>();
    for i in 0..FOOTPRINT_SERVICES {
        let (mut svc, mut slice) = (api_service(i), api_slice(i));
        match variant {
            "trimmed" => {
                trim_service(&mut svc);
                trim_slice(&mut slice);
            }
            // What the proxy loop dropped before trimming.
            "no-managed-fields" => {
                for meta in [&mut svc.metadata, &mut slice.metadata] {
                    meta.managed_fields = None;
                    if let Some(a) = meta.annotations.as_mut() {
                        a.remove("kubectl.kubernetes.io/last-applied-configuration");
                    }
                }
            }
            _ => {}
        }
        service_writer.apply_watcher_event(&watcher::Event::Apply(svc));
        slice_writer.apply_watcher_event(&watcher::Event::Apply(slice));
    }
    let grown = rss_bytes().saturating_sub(before);
    assert_eq!(
        (services.len(), slices.len()),
        (FOOTPRINT_SERVICES, FOOTPRINT_SERVICES)
    );
    grown
}

/// Prints the watch stores' resident memory at 10,000 Services: objects as the
/// API server sends them, without managedFields and kubectl's last-applied
/// annotation (the loop's trimming before), and trimmed; each filled in a
/// fresh process of this test binary.
///
/// `cargo test -p node-agent --release --lib store_footprint -- --ignored --nocapture`
#[test]
#[ignore = "measurement: prints figures, asserts nothing about size"]
fn store_footprint() {
    if let Ok(variant) = std::env::var(FOOTPRINT_VARIANT) {
        let grown = fill_stores(&variant);
        println!("footprint-bytes {grown}");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    for variant in ["as-sent", "no-managed-fields", "trimmed"] {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "proxy::trim::tests::store_footprint"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env(FOOTPRINT_VARIANT, variant)
            .output()
            .expect("the test binary runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let bytes: f64 = text
            .lines()
            .find_map(|l| l.split_once("footprint-bytes ").map(|(_, b)| b))
            .and_then(|b| b.trim().parse().ok())
            .unwrap_or(f64::NAN);
        println!(
            "watch stores, {FOOTPRINT_SERVICES} Services + {FOOTPRINT_SERVICES} EndpointSlices, {variant}: RSS +{:.1} MiB",
            bytes / 1024.0 / 1024.0
        );
    }
}
