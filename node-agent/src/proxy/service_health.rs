//! What the service health check ports serve: kube-proxy's
//! `pkg/proxy/healthcheck/service_health.go`, as a pure planner.
//!
//! A LoadBalancer Service with `externalTrafficPolicy: Local` has a
//! `healthCheckNodePort`; the cloud's load balancer asks every node there and
//! sends traffic only to nodes that answer 200, i.e. that have a ready endpoint
//! of the Service. [`health_checks`] says which ports to serve and with how many
//! local endpoints; [`respond`] is the answer. The listeners are in
//! [`super::health_server`].
//!
//! ```text
//!   Model ──health_checks(node)──> [HealthCheck] ──> health_server (one listener per port)
//!   request ──respond(check, proxy healthy)──> 200 / 503 + JSON
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::model::Model;

/// One Service's health check port and what it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub port: u16,
    /// Ready endpoints on this node, counted by address (a pod serving two
    /// ports of the Service is one endpoint).
    pub local_endpoints: usize,
}

/// A Service (`namespace`, `name`).
type ServiceName = (Arc<str>, Arc<str>);

/// The health checks this node serves, by port. Terminating endpoints do not
/// count: a node whose endpoints all terminate should lose its traffic.
pub fn health_checks(model: &Model, node: &str) -> BTreeMap<u16, HealthCheck> {
    // Ports of one Service share its health check port; their endpoints merge.
    let mut by_service: BTreeMap<ServiceName, (u16, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
    for (name, svc) in &model.services {
        let Some(port) = svc.health_check_node_port() else {
            continue;
        };
        let local = by_service
            .entry((name.namespace.clone(), name.name.clone()))
            .or_insert_with(|| (port, BTreeSet::new()));
        local.1.extend(
            model
                .endpoints
                .get(name)
                .into_iter()
                .flatten()
                .filter(|e| e.ready && e.node_name.as_deref() == Some(node))
                .map(|e| e.ip),
        );
    }
    by_service
        .into_iter()
        .map(|((namespace, name), (port, local))| {
            (
                port,
                HealthCheck {
                    namespace,
                    name,
                    port,
                    local_endpoints: local.len(),
                },
            )
        })
        .collect()
}

/// An answer of a health check port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthResponse {
    /// 200 with local endpoints and a healthy proxy, 503 otherwise.
    pub status: u16,
    /// kube-proxy's JSON body.
    pub body: String,
}

/// The answer for `check`; `proxy_healthy` is what `/healthz` says of the
/// proxy (a change queued too long makes the node unhealthy for every Service).
pub fn respond(check: &HealthCheck, proxy_healthy: bool) -> HealthResponse {
    let status = if check.local_endpoints > 0 && proxy_healthy {
        200
    } else {
        503
    };
    let body = serde_json::json!({
        "service": {"namespace": &*check.namespace, "name": &*check.name},
        "localEndpoints": check.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    });
    HealthResponse {
        status,
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{
        Endpoint, ExternalAccess, Protocol, ServicePort, ServicePortName, TrafficPolicy,
    };

    fn port(svc: &str, port_name: &str, health: Option<u16>) -> ServicePort {
        ServicePort {
            name: ServicePortName {
                namespace: "shop".into(),
                name: svc.into(),
                port: port_name.into(),
                protocol: Protocol::Tcp,
            },
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            node_port: Some(30080),
            affinity_seconds: None,
            internal_policy: TrafficPolicy::Cluster,
            external_policy: TrafficPolicy::Local,
            external: health.map(|p| {
                Box::new(ExternalAccess {
                    health_check_node_port: Some(p),
                    ..Default::default()
                })
            }),
        }
    }

    fn ep(ip: [u8; 4], port: u16, node: &str, ready: bool) -> Endpoint {
        Endpoint {
            ip: ip.into(),
            port,
            ready,
            serving: true,
            terminating: !ready,
            node_name: Some(node.into()),
            hints: None,
        }
    }

    fn model(ports: Vec<(ServicePort, Vec<Endpoint>)>) -> Model {
        let mut m = Model::default();
        for (p, eps) in ports {
            m.endpoints.insert(p.name.clone(), eps);
            m.services.insert(p.name.clone(), p);
        }
        m
    }

    #[test]
    fn counts_ready_local_endpoints_once_per_address() {
        let m = model(vec![
            (
                port("web", "http", Some(31000)),
                vec![
                    ep([10, 244, 1, 5], 8080, "node-a", true),
                    ep([10, 244, 1, 6], 8080, "node-a", false),
                    ep([10, 244, 2, 5], 8080, "node-b", true),
                ],
            ),
            (
                port("web", "https", Some(31000)),
                vec![ep([10, 244, 1, 5], 8443, "node-a", true)],
            ),
            (
                port("plain", "http", None),
                vec![ep([10, 244, 1, 7], 80, "node-a", true)],
            ),
        ]);
        let checks = health_checks(&m, "node-a");
        assert_eq!(checks.len(), 1, "only Services with a health check port");
        let web = &checks[&31000];
        assert_eq!((&*web.namespace, &*web.name), ("shop", "web"));
        assert_eq!(
            web.local_endpoints, 1,
            "terminating and remote ones left out"
        );
        assert_eq!(health_checks(&m, "node-b")[&31000].local_endpoints, 1);
        assert_eq!(health_checks(&m, "node-c")[&31000].local_endpoints, 0);
    }

    #[test]
    fn answers_200_only_with_local_endpoints_and_a_healthy_proxy() {
        let check = HealthCheck {
            namespace: "shop".into(),
            name: "web".into(),
            port: 31000,
            local_endpoints: 2,
        };
        let ok = respond(&check, true);
        assert_eq!(ok.status, 200);
        let body: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "service": {"namespace": "shop", "name": "web"},
                "localEndpoints": 2,
                "serviceProxyHealthy": true
            })
        );
        assert_eq!(respond(&check, false).status, 503);
        let none = HealthCheck {
            local_endpoints: 0,
            ..check
        };
        let answer = respond(&none, true);
        assert_eq!(answer.status, 503);
        assert!(
            answer.body.contains("\"localEndpoints\":0"),
            "{}",
            answer.body
        );
    }
}
