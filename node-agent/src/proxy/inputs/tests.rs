//! The inputs kept object by object against the model built from scratch.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{
    Endpoint as K8sEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;

use super::*;
use crate::proxy::model::SkipReason;

fn meta(name: &str, labels: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        namespace: Some("ns".into()),
        name: Some(name.into()),
        labels: labels.map(|s| BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), s.to_string())])),
        ..Default::default()
    }
}

fn service(name: &str, ip: &str, ports: &[(&str, &str)]) -> Service {
    Service {
        metadata: meta(name, None),
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(
                ports
                    .iter()
                    .enumerate()
                    .map(|(i, (name, protocol))| K8sServicePort {
                        name: Some(name.to_string()),
                        protocol: Some(protocol.to_string()),
                        port: 80 + i as i32,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(
    name: &str,
    service: Option<&str>,
    ports: &[(&str, &str)],
    eps: &[(&str, bool)],
) -> EndpointSlice {
    EndpointSlice {
        metadata: meta(name, service),
        address_type: "IPv4".into(),
        endpoints: Some(
            eps.iter()
                .map(|(ip, ready)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(
            ports
                .iter()
                .map(|(name, protocol)| EndpointPort {
                    name: Some(name.to_string()),
                    protocol: Some(protocol.to_string()),
                    port: Some(8080),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

/// The model as built before the inputs existed: every object converted, the
/// slices merged in name order. The oracle for the incremental bookkeeping.
fn from_scratch(services: &[&Service], slices: &[&EndpointSlice]) -> Model {
    let mut model = Model::default();
    for svc in services {
        for port in service_ports(svc).0 {
            model.services.insert(port.name.clone(), port);
        }
    }
    let mut slices = slices.to_vec();
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for slice in slices {
        for (name, ep) in slice_endpoints(slice).0 {
            let list = model.endpoints.entry(name).or_default();
            if !list.iter().any(|e| e.ip == ep.ip && e.port == ep.port) {
                list.push(ep);
            }
        }
    }
    for list in model.endpoints.values_mut() {
        list.sort_by_key(|e| (e.ip, e.port));
    }
    model
}

#[derive(Clone, Debug)]
enum Op {
    ApplyService(Box<Service>),
    DeleteService(String),
    ApplySlice(Box<EndpointSlice>),
    DeleteSlice(String),
    /// A relist of services (or slices) that brings back only these of the
    /// objects there are (by index), while they change no further.
    Relist(bool, Vec<usize>),
}

const PORTS: [(&str, &str); 3] = [("http", "TCP"), ("dns", "UDP"), ("http", "UDP")];

fn arb_ports() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    proptest::sample::subsequence(PORTS.to_vec(), 0..=2)
}

fn arb_service() -> impl Strategy<Value = Service> {
    (
        proptest::sample::select(vec!["a", "b", "c"]),
        proptest::sample::select(vec!["10.96.0.1", "10.96.0.2", "None", "bogus"]),
        arb_ports(),
    )
        .prop_map(|(name, ip, ports)| service(name, ip, &ports))
}

fn arb_slice() -> impl Strategy<Value = EndpointSlice> {
    let ep = (
        proptest::sample::select(vec!["10.244.0.1", "10.244.0.2", "10.244.0.3", "::1"]),
        any::<bool>(),
    );
    (
        proptest::sample::select(vec!["a-1", "a-2", "b-1", "x-1"]),
        proptest::option::of(proptest::sample::select(vec!["a", "b", "c"])),
        arb_ports(),
        proptest::collection::vec(ep, 0..3),
    )
        .prop_map(|(name, svc, ports, eps)| slice(name, svc, &ports, &eps))
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => arb_service().prop_map(|s| Op::ApplyService(Box::new(s))),
        1 => proptest::sample::select(vec!["a", "b", "c"]).prop_map(|n| Op::DeleteService(n.into())),
        4 => arb_slice().prop_map(|s| Op::ApplySlice(Box::new(s))),
        1 => proptest::sample::select(vec!["a-1", "a-2", "b-1", "x-1"]).prop_map(|n| Op::DeleteSlice(n.into())),
        1 => (any::<bool>(), proptest::collection::vec(0usize..4, 0..4)).prop_map(|(s, keep)| Op::Relist(s, keep)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the watches bring in whatever order (changes, deletions,
    /// slices moving between Services, relists that miss deletions), the
    /// model is the one built from scratch from the objects there are, the
    /// skips are theirs, and every service port whose Service or endpoints
    /// changed is reported as changed.
    #[test]
    fn the_model_follows_the_objects(ops in proptest::collection::vec(arb_op(), 1..24)) {
        let mut inputs = ProxyInputs::default();
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        prop_assert_eq!(inputs.take_changed(), None);
        let mut before = Model::default();
        for op in ops {
            match op {
                Op::ApplyService(svc) => {
                    inputs.apply_service(&svc);
                    services.insert(svc.metadata.name.clone().unwrap(), *svc);
                }
                Op::DeleteService(name) => {
                    if let Some(svc) = services.remove(&name) {
                        inputs.delete_service(&svc);
                    }
                }
                Op::ApplySlice(slice) => {
                    inputs.apply_slice(&slice);
                    slices.insert(slice.metadata.name.clone().unwrap(), *slice);
                }
                Op::DeleteSlice(name) => {
                    if let Some(slice) = slices.remove(&name) {
                        inputs.delete_slice(&slice);
                    }
                }
                Op::Relist(of_services, keep) => {
                    let kind = if of_services { Kind::Service } else { Kind::EndpointSlice };
                    inputs.relist_started(kind);
                    if of_services {
                        let names: Vec<String> = services.keys().cloned().collect();
                        let kept: BTreeSet<&String> = keep.iter().filter_map(|i| names.get(*i)).collect();
                        services.retain(|n, _| kept.contains(n));
                        for svc in services.values() {
                            inputs.apply_service(svc);
                        }
                    } else {
                        let names: Vec<String> = slices.keys().cloned().collect();
                        let kept: BTreeSet<&String> = keep.iter().filter_map(|i| names.get(*i)).collect();
                        slices.retain(|n, _| kept.contains(n));
                        for slice in slices.values() {
                            inputs.apply_slice(slice);
                        }
                    }
                    inputs.relist_done(kind);
                }
            }
            let (s, e): (Vec<&Service>, Vec<&EndpointSlice>) = (services.values().collect(), slices.values().collect());
            let want = from_scratch(&s, &e);
            prop_assert_eq!(inputs.model(), &want);
            let want_skips: Vec<Skip> = s.iter().flat_map(|svc| service_ports(svc).1)
                .chain(e.iter().flat_map(|sl| slice_endpoints(sl).1))
                .collect();
            prop_assert_eq!(inputs.skipped(), want_skips);
            let changed = inputs.take_changed().expect("taken before");
            for port in before.services.keys().chain(want.services.keys())
                .chain(before.endpoints.keys()).chain(want.endpoints.keys())
            {
                let differs = before.services.get(port) != want.services.get(port)
                    || before.endpoints.get(port) != want.endpoints.get(port);
                prop_assert!(!differs || changed.contains(port), "{} changed unreported", port);
            }
            before = want;
        }
    }
}

#[test]
fn a_relist_deletes_what_went_missing_and_counts_as_listed() {
    let mut inputs = ProxyInputs::default();
    assert!(!inputs.listed());
    let a = service("a", "10.96.0.1", &[("http", "TCP")]);
    let b = service("b", "None", &[("http", "TCP")]);
    inputs.relist_started(Kind::Service);
    inputs.apply_service(&a);
    inputs.apply_service(&b);
    inputs.relist_done(Kind::Service);
    assert!(!inputs.listed(), "the slices have not listed yet");
    inputs.relist_started(Kind::EndpointSlice);
    inputs.apply_slice(&slice(
        "a-1",
        Some("a"),
        &[("http", "TCP")],
        &[("10.244.0.1", true)],
    ));
    inputs.relist_done(Kind::EndpointSlice);
    assert!(inputs.listed());
    assert_eq!(inputs.model().services.len(), 1);
    assert_eq!(inputs.skipped().len(), 1, "headless b");
    assert_eq!(inputs.skipped()[0].reason, SkipReason::Headless);
    inputs.take_changed();

    // Both Services were deleted while the watch was down: the relist brings none.
    inputs.relist_started(Kind::Service);
    inputs.relist_done(Kind::Service);
    assert!(inputs.model().services.is_empty());
    assert!(inputs.skipped().is_empty(), "b's skip went with it");
    let changed = inputs.take_changed().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(&*changed.first().unwrap().name, "a");
    assert_eq!(
        inputs.model().endpoints.len(),
        1,
        "a's slice is still there"
    );
}
