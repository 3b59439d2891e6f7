//! What of a watched Service or EndpointSlice the proxy keeps in its watch
//! stores: only the fields [`super::model`] reads, plus the trigger-time
//! annotation the loop measures network programming latency from. Pure.
//!
//! At 10,000 Services the stores hold every object for as long as the agent
//! runs; the API server's copies carry managedFields, kubectl's
//! last-applied-configuration, selectors, targetPorts, status, topology hints
//! and endpoint targetRefs, none of which changes a rule.

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::model::{SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL};

/// Set by the EndpointSlice controller: when the change that led to this
/// version of the slice happened (the start of network programming latency).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The Service as the proxy needs it: namespace, name, the other-proxy label,
/// and the spec fields that shape its rules.
pub fn trim_service(svc: &mut Service) {
    trim_meta(&mut svc.metadata, SERVICE_PROXY_NAME_LABEL);
    svc.status = None;
    svc.spec = svc.spec.take().map(|spec| ServiceSpec {
        type_: spec.type_,
        cluster_ip: spec.cluster_ip,
        cluster_ips: spec.cluster_ips,
        session_affinity: spec.session_affinity,
        session_affinity_config: spec.session_affinity_config.map(|c| SessionAffinityConfig {
            client_ip: c.client_ip.map(|ip| ClientIPConfig {
                timeout_seconds: ip.timeout_seconds,
            }),
        }),
        internal_traffic_policy: spec.internal_traffic_policy,
        external_traffic_policy: spec.external_traffic_policy,
        ports: spec.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| ServicePort {
                    name: p.name,
                    protocol: p.protocol,
                    port: p.port,
                    node_port: p.node_port,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
}

/// The EndpointSlice as the proxy needs it: namespace, name (it orders
/// slices), the service-name label, the trigger time, the address type, the
/// ports, and per endpoint its first address, conditions and node.
pub fn trim_slice(slice: &mut EndpointSlice) {
    trim_meta(&mut slice.metadata, SERVICE_NAME_LABEL);
    slice.ports = slice.ports.take().map(|ports| {
        ports
            .into_iter()
            .map(|p| EndpointPort {
                name: p.name,
                protocol: p.protocol,
                port: p.port,
                app_protocol: None,
            })
            .collect()
    });
    slice.endpoints = slice.endpoints.take().map(|eps| {
        eps.into_iter()
            .map(|e| Endpoint {
                // The model uses the first address only (all are fungible).
                addresses: e.addresses.into_iter().take(1).collect(),
                conditions: e.conditions,
                node_name: e.node_name,
                ..Default::default()
            })
            .collect()
    });
}

/// Namespace and name, the one label the model reads, the trigger time.
fn trim_meta(meta: &mut ObjectMeta, label: &str) {
    let labels = meta
        .labels
        .take()
        .and_then(|mut l| l.remove_entry(label))
        .map(|kv| [kv].into());
    let annotations = meta
        .annotations
        .take()
        .and_then(|mut a| a.remove_entry(TRIGGER_TIME_ANNOTATION))
        .map(|kv| [kv].into());
    *meta = ObjectMeta {
        namespace: meta.namespace.take(),
        name: meta.name.take(),
        labels,
        annotations,
        ..Default::default()
    };
}

#[cfg(test)]
mod tests;
