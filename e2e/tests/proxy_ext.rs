//! The service proxy's external paths and topology, with real traffic on the
//! local cluster (`e2e/cluster up`): external IPs, load balancer IPs with
//! source ranges, health check node ports, and zone hints (written by the test
//! and by the EndpointSlice controller for `trafficDistribution: PreferClose`).
//!
//! External and load balancer IPs are nc-node-1's own address (as a VIP that
//! a node holds), each test on a port of its own; clients are the nodes, a
//! pod-like namespace on nc-node-2 (see `nodeconfig_e2e::backends`) and the
//! host. The zone tests label the nodes `topology.kubernetes.io/zone` (zone-a,
//! zone-b), one test at a time, and take the labels off afterwards.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nodeconfig_e2e::backends::{
    get_from_backend, get_from_node, get_many_from_node, iptables_save, prepare, run_in_node,
    tally, unique_name, Backend, BACKEND_PORT, NAMESPACE, OWNER_LABEL, PORT_NAME,
};
use nodeconfig_e2e::kubectl::{apply, condition, eventually, get_json, kubectl};
use nodeconfig_e2e::node::{node_ip, node_name};
use serde_json::{json, Value};

/// How long a change may take to reach the rules (watch, minSyncPeriod, restore).
const PROGRAMMED: Duration = Duration::from_secs(60);
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

// ---------------------------------------------------------------- helpers

/// A Service in [`NAMESPACE`] made from `spec` (one TCP port named
/// [`PORT_NAME`] to [`BACKEND_PORT`] is added) and, without a selector, the
/// EndpointSlice the test writes; both deleted when dropped.
struct ExtService {
    name: String,
    slice: String,
    svc: Value,
}

impl ExtService {
    #[track_caller]
    fn create(what: &str, port: u16, mut spec: Value) -> ExtService {
        prepare();
        let name = unique_name(what);
        spec["ports"] = json!([{"name": PORT_NAME, "port": port, "protocol": "TCP", "targetPort": BACKEND_PORT}]);
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": owner_labels()},
            "spec": spec,
        });
        apply(&service.to_string()).expect_ok("apply service");
        let svc = get_json("service", &name, Some(NAMESPACE))
            .unwrap_or_else(|| panic!("service {name} is not there after apply"));
        ExtService {
            slice: format!("{name}-e2e"),
            name,
            svc,
        }
    }

    /// `namespace/name:port`, as the rules' comments name this Service's port.
    fn label(&self) -> String {
        format!("{NAMESPACE}/{}:{PORT_NAME}", self.name)
    }

    fn cluster_ip(&self) -> String {
        self.svc["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Writes the EndpointSlice: these backends, ready, on their nodes, each
    /// with the zone hints given (`None`: no hints).
    #[track_caller]
    fn set_endpoints(&self, backends: &[(&Backend, Option<&str>)]) {
        let endpoints: Vec<Value> = backends
            .iter()
            .map(|(b, zone)| {
                let mut e = json!({"addresses": [b.ip.to_string()], "conditions": {"ready": true}, "nodeName": b.node_name()});
                if let Some(zone) = zone {
                    e["hints"] = json!({"forZones": [{"name": zone}]});
                }
                e
            })
            .collect();
        let mut labels = owner_labels();
        labels["kubernetes.io/service-name"] = json!(self.name);
        labels["endpointslice.kubernetes.io/managed-by"] = json!("e2e.nodeconfig.dev");
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": self.slice, "namespace": NAMESPACE, "labels": labels},
            "addressType": "IPv4",
            "ports": [{"name": PORT_NAME, "port": BACKEND_PORT, "protocol": "TCP"}],
            "endpoints": endpoints,
        });
        apply(&slice.to_string()).expect_ok("apply endpointslice");
    }

    /// Sets `status.loadBalancer` (what a cloud's controller would write).
    #[track_caller]
    fn set_load_balancer(&self, ingress: Value) {
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}}).to_string();
        kubectl(&[
            "patch",
            "service",
            &self.name,
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])
        .expect_ok("patch service status");
    }

    #[track_caller]
    fn patch_spec(&self, spec: Value) {
        let patch = json!({ "spec": spec }).to_string();
        kubectl(&[
            "patch",
            "service",
            &self.name,
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            &patch,
        ])
        .expect_ok("patch service");
    }

    fn delete(&self) {
        for (kind, name) in [("service", &self.name), ("endpointslice", &self.slice)] {
            let _ = kubectl(&[
                "delete",
                kind,
                name,
                "-n",
                NAMESPACE,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
    }
}

impl Drop for ExtService {
    fn drop(&mut self) {
        self.delete();
    }
}

fn owner_labels() -> Value {
    let mut labels = json!({});
    labels[OWNER_LABEL] = json!(std::process::id().to_string());
    labels
}

/// Waits until a rule of node `node`'s `table` names `label` and contains `text`.
#[track_caller]
fn await_rule(node: usize, table: &str, label: &str, text: &str) {
    eventually(
        PROGRAMMED,
        &format!(
            "{} {table}: a rule of {label} with {text:?}",
            node_name(node)
        ),
        || {
            iptables_save(node, table)
                .lines()
                .any(|l| l.contains(label) && l.contains(text))
                .then_some(())
        },
    );
}

/// Waits until `get` answers with one of `names`.
#[track_caller]
fn await_answer(what: &str, names: &[&str], get: impl Fn() -> Result<String, String>) -> String {
    let started = Instant::now();
    let mut last = String::new();
    let got = eventually(PROGRAMMED, what, || match get() {
        Ok(body) if names.contains(&body.as_str()) => Some(body),
        Ok(body) => {
            last = format!("answered {body:?}");
            None
        }
        Err(e) => {
            if e != last {
                println!("  (not yet: {e})");
            }
            last = e;
            None
        }
    });
    println!("{what}: {got} after {:?}", started.elapsed());
    got
}

/// One GET from the host itself (outside every node), 2 s at most.
fn get_from_host(url: &str) -> Result<String, String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "2", url])
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `count` GETs from the host: each body, or `None` when it failed.
fn get_many_from_host(url: &str, count: usize) -> Vec<Option<String>> {
    (0..count).map(|_| get_from_host(url).ok()).collect()
}

/// One GET with curl inside node `node`: the status code and the body.
fn curl_in_node(node: usize, url: &str) -> Result<(u16, String), String> {
    let out = run_in_node(
        node,
        "curl",
        &["-s", "--max-time", "2", "-w", "\n%{http_code}", url],
    )?;
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    let code = code
        .parse::<u16>()
        .map_err(|_| format!("no status code in {out:?}"))?;
    Ok((code, body.to_string()))
}

// ---------------------------------------------------------------- external IPs

#[test]
fn external_ip_answers_from_a_node_and_from_outside() {
    let a = Backend::start(1, "extip-a");
    let b = Backend::start(2, "extip-b");
    let port = 18081;
    let svc = ExtService::create("extip", port, json!({"externalIPs": [node_ip(1)]}));
    svc.set_endpoints(&[(&a, None), (&b, None)]);
    let url = format!("http://{}:{port}/", node_ip(1));
    for node in [1, 2] {
        await_rule(
            node,
            "nat",
            &format!("{} external IP", svc.label()),
            "NC-EXT-",
        );
    }

    // From nc-node-2: its own OUTPUT rules send it on.
    await_answer(
        "the external IP from nc-node-2",
        &["extip-a", "extip-b"],
        || get_from_node(2, &url),
    );
    let counts = tally(&get_many_from_node(2, &url, 30));
    println!("30 requests to {url} from nc-node-2: {counts:?}");
    assert_eq!(counts.get("<failed>"), None, "{counts:?}");
    assert_eq!(counts.len(), 2, "both endpoints: {counts:?}");

    // From outside: nc-node-1's PREROUTING, masqueraded so the endpoint on
    // nc-node-2 answers back through nc-node-1.
    await_answer(
        "the external IP from the host",
        &["extip-a", "extip-b"],
        || get_from_host(&url),
    );
    let counts = tally(&get_many_from_host(&url, 30));
    println!("30 requests to {url} from the host: {counts:?}");
    assert_eq!(counts.get("<failed>"), None, "{counts:?}");
    assert_eq!(counts.len(), 2, "both endpoints: {counts:?}");

    // Gone with the field.
    svc.patch_spec(json!({"externalIPs": null}));
    eventually(PROGRAMMED, "the external IP rule to go", || {
        (!iptables_save(1, "nat").contains(&format!("{} external IP", svc.label()))).then_some(())
    });
    assert!(
        get_from_host(&url).is_err(),
        "the external IP still answers"
    );
}

#[test]
fn external_ip_with_local_policy_uses_only_local_endpoints() {
    let a = Backend::start(1, "extlocal-a");
    let b = Backend::start(2, "extlocal-b");
    let port = 18082;
    let svc = ExtService::create(
        "extlocal",
        port,
        json!({"type": "NodePort", "externalTrafficPolicy": "Local", "externalIPs": [node_ip(1)]}),
    );
    svc.set_endpoints(&[(&b, None)]);
    let url = format!("http://{}:{port}/", node_ip(1));
    await_rule(
        1,
        "filter",
        &format!("{} has no local endpoints", svc.label()),
        "DROP",
    );
    await_rule(2, "nat", &format!("{} external IP", svc.label()), "NC-EXT-");

    // The node itself may still use it (the short-circuit to every endpoint)...
    await_answer("the external IP from nc-node-2", &["extlocal-b"], || {
        get_from_node(2, &url)
    });
    // ...but from outside nc-node-1 has no endpoint of its own: dropped.
    for _ in 0..2 {
        let got = get_from_host(&url);
        println!("from the host without a local endpoint: {got:?}");
        assert!(got.is_err(), "answered without a local endpoint: {got:?}");
    }

    svc.set_endpoints(&[(&a, None), (&b, None)]);
    await_answer("the external IP from the host", &["extlocal-a"], || {
        get_from_host(&url)
    });
    let counts = tally(&get_many_from_host(&url, 20));
    println!("20 requests from the host with endpoints on both nodes: {counts:?}");
    assert_eq!(
        counts.get("extlocal-a"),
        Some(&20),
        "only nc-node-1's own endpoint: {counts:?}"
    );
}

// ---------------------------------------------------------------- load balancers

#[test]
fn load_balancer_ip_takes_only_its_source_ranges() {
    let a = Backend::start(1, "lb-a");
    let b = Backend::start(2, "lb-b");
    let client = Backend::start(2, "lb-client");
    let port = 18083;
    let svc = ExtService::create(
        "lb",
        port,
        json!({
            "type": "LoadBalancer",
            "allocateLoadBalancerNodePorts": false,
            "loadBalancerSourceRanges": [format!("{}/32", node_ip(2))],
        }),
    );
    svc.set_endpoints(&[(&a, None), (&b, None)]);
    svc.set_load_balancer(json!([{"ip": node_ip(1)}]));
    let url = format!("http://{}:{port}/", node_ip(1));
    await_rule(
        2,
        "nat",
        &format!("{} loadbalancer IP", svc.label()),
        "NC-FW-",
    );
    await_rule(2, "filter", "traffic not accepted by NC-FW-", "DROP");

    // nc-node-2's address is in the range.
    await_answer(
        "the load balancer IP from nc-node-2",
        &["lb-a", "lb-b"],
        || get_from_node(2, &url),
    );
    // A pod on nc-node-2 and the host are not.
    for _ in 0..2 {
        let from_pod = get_from_backend(&client, &url);
        let from_host = get_from_host(&url);
        println!("outside the ranges: from a pod {from_pod:?}, from the host {from_host:?}");
        assert!(
            from_pod.is_err(),
            "a source outside the ranges got {from_pod:?}"
        );
        assert!(
            from_host.is_err(),
            "a source outside the ranges got {from_host:?}"
        );
    }

    // The pods' range added: the pod gets through.
    svc.patch_spec(
        json!({"loadBalancerSourceRanges": [format!("{}/32", node_ip(2)), "10.244.0.0/16"]}),
    );
    await_answer("the load balancer IP from a pod", &["lb-a", "lb-b"], || {
        get_from_backend(&client, &url)
    });

    // An ipMode Proxy load balancer gets no VIP rules (its traffic comes to the NodePort).
    svc.set_load_balancer(json!([{"ip": node_ip(1), "ipMode": "Proxy"}]));
    eventually(PROGRAMMED, "the VIP rules to go for ipMode Proxy", || {
        (!iptables_save(2, "nat").contains(&format!("{} loadbalancer IP", svc.label())))
            .then_some(())
    });
}

#[test]
fn health_check_node_port_reports_the_nodes_local_endpoints() {
    let a = Backend::start(1, "hc-a");
    let b = Backend::start(2, "hc-b");
    let svc = ExtService::create(
        "hc",
        18084,
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
    );
    let hc = svc.svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .unwrap_or_else(|| panic!("no healthCheckNodePort allocated: {}", svc.svc));
    svc.set_endpoints(&[(&a, None)]);
    let url = |node: usize| format!("http://{}:{hc}/", node_ip(node));
    await_rule(
        1,
        "filter",
        &format!("{} health check node port", svc.label()),
        "ACCEPT",
    );

    let expect = |node: usize, code: u16, local: u64| {
        let started = Instant::now();
        let (got, body) = eventually(
            PROGRAMMED,
            &format!("{} to answer {code} on {hc}", node_name(node)),
            || match curl_in_node(2, &url(node)) {
                Ok((c, body)) if c == code => Some((c, body)),
                other => {
                    println!("  (not yet: {other:?})");
                    None
                }
            },
        );
        println!(
            "{}:{hc} answered {got} after {:?}: {body}",
            node_name(node),
            started.elapsed()
        );
        let body: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
        assert_eq!(
            body,
            json!({
                "service": {"namespace": NAMESPACE, "name": svc.name},
                "localEndpoints": local,
                "serviceProxyHealthy": true
            })
        );
    };
    expect(1, 200, 1);
    expect(2, 503, 0);

    // The endpoint moves to nc-node-2: the answers swap.
    svc.set_endpoints(&[(&b, None)]);
    expect(2, 200, 1);
    expect(1, 503, 0);

    // The Service goes: so does the port.
    svc.delete();
    eventually(PROGRAMMED, "the health check port to close", || {
        let got = curl_in_node(2, &url(2));
        got.is_err().then_some(())
    });
}

// ---------------------------------------------------------------- topology

/// One zone test at a time: they share the nodes' zone labels.
static ZONES: Mutex<()> = Mutex::new(());

/// nc-node-1 in zone-a, nc-node-2 in zone-b, until dropped.
struct Zones;

impl Zones {
    fn label() -> Zones {
        for (node, zone) in [(1, "zone-a"), (2, "zone-b")] {
            kubectl(&[
                "label",
                "node",
                &node_name(node),
                &format!("{ZONE_LABEL}={zone}"),
                "--overwrite",
            ])
            .expect_ok("label node zone");
        }
        Zones
    }
}

impl Drop for Zones {
    fn drop(&mut self) {
        for node in [1, 2] {
            let _ = kubectl(&["label", "node", &node_name(node), &format!("{ZONE_LABEL}-")]);
        }
    }
}

/// Waits until every one of `count` GETs from node `node` to `url` answers `want`.
#[track_caller]
fn await_all_from(node: usize, url: &str, want: &str, count: usize) {
    let started = Instant::now();
    let mut last = Default::default();
    eventually(
        PROGRAMMED,
        &format!(
            "all {count} requests from {} to go to {want}",
            node_name(node)
        ),
        || {
            let counts = tally(&get_many_from_node(node, url, count));
            let done = counts.get(want) == Some(&count);
            last = counts;
            done.then_some(())
        },
    );
    println!(
        "{}: all {count} requests to {url} went to {want} after {:?} ({last:?})",
        node_name(node),
        started.elapsed()
    );
}

#[test]
fn zone_hints_keep_traffic_in_the_clients_zone() {
    let _zones_turn = ZONES.lock().unwrap_or_else(|p| p.into_inner());
    let _zones = Zones::label();
    let a = Backend::start(1, "zone-a-ep");
    let b = Backend::start(2, "zone-b-ep");
    let svc = ExtService::create("zones", 80, json!({}));
    svc.set_endpoints(&[(&a, Some("zone-a")), (&b, Some("zone-b"))]);
    let url = format!("http://{}:80/", svc.cluster_ip());

    await_all_from(1, &url, "zone-a-ep", 20);
    await_all_from(2, &url, "zone-b-ep", 20);

    // One endpoint without hints: the hints no longer apply, both get traffic.
    svc.set_endpoints(&[(&a, Some("zone-a")), (&b, None)]);
    eventually(PROGRAMMED, "nc-node-1 to use both endpoints again", || {
        let counts = tally(&get_many_from_node(1, &url, 20));
        (counts.len() == 2 && !counts.contains_key("<failed>")).then_some(())
    });
}

#[test]
fn prefer_close_services_stay_in_the_zone_with_the_controllers_hints() {
    let _zones_turn = ZONES.lock().unwrap_or_else(|p| p.into_inner());
    prepare();
    let _zones = Zones::label();
    let ns = unique_name("zonal");
    kubectl(&["create", "namespace", &ns]).expect_ok("create namespace");
    struct DropNamespace(String);
    impl Drop for DropNamespace {
        fn drop(&mut self) {
            let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
        }
    }
    let _ns = DropNamespace(ns.clone());
    eventually(PROGRAMMED, "the default ServiceAccount", || {
        get_json("serviceaccount", "default", Some(&ns)).map(|_| ())
    });
    for node in [1, 2] {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("zonal-{node}"), "namespace": ns, "labels": {"app": "zonal"}},
            "spec": {
                "nodeName": node_name(node),
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "web", "image": "nodeconfig.local/busybox:1.35", "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }],
            },
        });
        apply(&pod.to_string()).expect_ok("apply pod");
    }
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "zonal", "namespace": ns},
        "spec": {
            "selector": {"app": "zonal"},
            "trafficDistribution": "PreferClose",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    });
    apply(&service.to_string()).expect_ok("apply service");
    for node in [1, 2] {
        eventually(
            Duration::from_secs(90),
            &format!("pod zonal-{node} to be ready"),
            || {
                let p = get_json("pod", &format!("zonal-{node}"), Some(&ns))?;
                (condition(&p, "Ready")?.0 == "True").then_some(())
            },
        );
    }
    // The EndpointSlice controller hints each endpoint for its node's zone.
    let slice = eventually(PROGRAMMED, "zone hints on both endpoints", || {
        let run = kubectl(&[
            "get",
            "endpointslices",
            "-n",
            &ns,
            "-l",
            "kubernetes.io/service-name=zonal",
            "-o",
            "json",
        ]);
        let list: Value = serde_json::from_str(&run.stdout).ok()?;
        let eps = list["items"][0]["endpoints"].as_array()?.clone();
        let hinted = eps
            .iter()
            .filter(|e| {
                e["hints"]["forZones"]
                    .as_array()
                    .is_some_and(|z| !z.is_empty())
            })
            .count();
        (eps.len() == 2 && hinted == 2).then_some(list["items"][0].clone())
    });
    println!("{}", slice["endpoints"]);
    let svc = get_json("service", "zonal", Some(&ns)).expect("service zonal");
    let url = format!(
        "http://{}:80/",
        svc["spec"]["clusterIP"].as_str().unwrap_or_default()
    );
    await_all_from(1, &url, "zonal-1", 20);
    await_all_from(2, &url, "zonal-2", 20);
}
