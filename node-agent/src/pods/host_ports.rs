//! Host ports a pod takes on its node, and whether they clash with those of
//! the pods already there: the scheduler's `NodePorts` filter, which the
//! kubelet's admission runs too (`util.GetHostPorts`, `HostPortInfo`).
//!
//! A port is (protocol, host IP, port); an empty protocol is TCP and an
//! empty host IP is `0.0.0.0`, which clashes with the same protocol and
//! port on any address.
use k8s_openapi::api::core::v1::{ContainerPort, Pod};

use crate::pods::plan::is_sidecar;

/// Any address of the node.
const ALL_ADDRESSES: &str = "0.0.0.0";

/// One host port a pod takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    fn of(p: &ContainerPort) -> Option<Self> {
        let port = p.host_port.filter(|port| *port > 0)?;
        let protocol = match p.protocol.as_deref() {
            None | Some("") => "TCP",
            Some(other) => other,
        };
        let ip = match p.host_ip.as_deref() {
            None | Some("") => ALL_ADDRESSES,
            Some(ip) => ip,
        };
        Some(Self {
            protocol: protocol.to_string(),
            ip: ip.to_string(),
            port,
        })
    }

    /// The two cannot both be bound: same protocol and port, and the same
    /// address or either on all addresses.
    fn clashes_with(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || self.ip == ALL_ADDRESSES || other.ip == ALL_ADDRESSES)
    }
}

/// The host ports of the pod's containers and of its sidecars (the init
/// containers that run as long as the pod).
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(HostPort::of)
        .collect()
}

/// Whether every host port `pod` asks for is free beside `others`.
pub fn ports_fit<'a>(pod: &Pod, others: impl IntoIterator<Item = &'a Pod>) -> bool {
    let used: Vec<HostPort> = others.into_iter().flat_map(host_ports).collect();
    host_ports(pod)
        .iter()
        .all(|want| !used.iter().any(|u| want.clashes_with(u)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]}}))
        .unwrap()
    }

    #[test]
    fn host_ports_clash_as_the_scheduler_says() {
        let cases = [
            (
                "same port, both on all addresses",
                json!({"hostPort": 80}),
                json!({"hostPort": 80}),
                false,
            ),
            (
                "another port",
                json!({"hostPort": 80}),
                json!({"hostPort": 81}),
                true,
            ),
            (
                "another protocol",
                json!({"hostPort": 53, "protocol": "UDP"}),
                json!({"hostPort": 53}),
                true,
            ),
            (
                "an empty protocol is TCP",
                json!({"hostPort": 53, "protocol": "TCP"}),
                json!({"hostPort": 53, "protocol": ""}),
                false,
            ),
            (
                "two distinct addresses",
                json!({"hostPort": 80, "hostIP": "10.0.0.1"}),
                json!({"hostPort": 80, "hostIP": "10.0.0.2"}),
                true,
            ),
            (
                "one address against all",
                json!({"hostPort": 80, "hostIP": "10.0.0.1"}),
                json!({"hostPort": 80}),
                false,
            ),
            (
                "all against one address",
                json!({"hostPort": 80}),
                json!({"hostPort": 80, "hostIP": "10.0.0.1"}),
                false,
            ),
            (
                "no host port takes nothing",
                json!({"containerPort": 80}),
                json!({"containerPort": 80}),
                true,
            ),
        ];
        for (name, want, used, fits) in cases {
            let ports = |p: serde_json::Value| {
                let mut p = p;
                p["containerPort"] = json!(8080);
                json!([p])
            };
            assert_eq!(
                ports_fit(&pod(ports(want)), [&pod(ports(used))]),
                fits,
                "{name}"
            );
        }
    }

    #[test]
    fn sidecars_take_host_ports_and_other_init_containers_do_not() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [
                {"name": "s", "image": "i", "restartPolicy": "Always", "ports": [{"containerPort": 1, "hostPort": 9001}]},
                {"name": "i", "image": "i", "ports": [{"containerPort": 1, "hostPort": 9002}]}],
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 1, "hostPort": 9003}]}]}}))
        .unwrap();
        let ports: Vec<i32> = host_ports(&p).iter().map(|h| h.port).collect();
        assert_eq!(ports, [9001, 9003]);
    }
}
