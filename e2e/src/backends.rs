//! Service backends without pods, the Services and EndpointSlices that publish
//! them, and clients inside the nodes: what the proxy's end-to-end tests need
//! while the agent does not run pods yet.
//!
//! A [`Backend`] is busybox `httpd` in a network namespace of its own,
//! `ncb-<node>-<host>`, joined by a veth pair (`ncb<host>` in the node, `eth0`
//! in the backend) to the node's pod bridge `cni0`, with the address
//! `10.244.<node>.<host>/24` and a default route via the bridge's
//! `10.244.<node>.1`. Hosts are taken from 200..=250, which host-local IPAM
//! never hands out (its range ends at .199, see e2e/scripts/lib/nodes.sh), and
//! a host whose IPAM reservation file exists is skipped. The namespace's name is the claim: `ip
//! netns add` fails when another test (or test process) holds the address. Every
//! GET gets the backend's name as the body.
//!
//! A [`TestService`] is a Service without selector (ClusterIP auto-allocated)
//! and one EndpointSlice that the test writes. Both kinds of objects remove
//! everything they made when dropped, also when the test failed; [`prepare`]
//! removes what a killed earlier test run left behind (owner pid gone).
//!
//! Traffic goes only to addresses of the harness: the pod range, the service
//! range and the nodes' addresses, from inside the node namespaces.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::kubectl::{apply, eventually, get_json, kubectl, require_cluster};
use crate::node::{cri_endpoint, exec_in_node, node_name, run_dir};
use crate::state_dir;

/// The port every backend's httpd listens on (the EndpointSlice port).
pub const BACKEND_PORT: u16 = 8080;
/// The Services' port (named [`PORT_NAME`]).
pub const SERVICE_PORT: u16 = 80;
pub const PORT_NAME: &str = "http";
/// Namespace of the test Services.
pub const NAMESPACE: &str = "default";
/// Label on every object the proxy tests make; its value is the owning test process.
pub const OWNER_LABEL: &str = "e2e.nodeconfig.dev/proxy-test-owner";

const FIRST_HOST: u8 = 200;
const LAST_HOST: u8 = 250;
const BRIDGE: &str = "cni0";
const NETNS_PREFIX: &str = "ncb-";

// ---------------------------------------------------------------- processes

fn output_text(out: &Output) -> String {
    let stdout: String = String::from_utf8_lossy(&out.stdout)
        .trim_end()
        .chars()
        .take(2000)
        .collect();
    format!(
        "{}; stdout: {stdout:?}; stderr: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Runs a program on the host; Err(what it printed) when it could not run or failed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            output_text(&out)
        ))
    }
}

/// Runs a program inside node `node`'s network namespace; Err as [`run`].
pub fn run_in_node(node: usize, program: &str, args: &[&str]) -> Result<String, String> {
    let out = exec_in_node(&node_name(node), program, args)
        .map_err(|e| format!("cannot run nsenter: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {program} {}: {}",
            node_name(node),
            args.join(" "),
            output_text(&out)
        ))
    }
}

fn netns_file(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

fn run_in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec![
        format!("--net={}", netns_file(netns).display()),
        "--".into(),
        program.into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run("nsenter", &all)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn nonce() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- clean-up of earlier runs

fn owners_dir() -> PathBuf {
    run_dir().join("e2e-backends")
}

fn owner_file(netns: &str) -> PathBuf {
    owners_dir().join(format!("{netns}.owner"))
}

/// Fails at once when the cluster is down, and (once per process) removes what
/// killed earlier test processes left: backend namespaces, their veths and
/// processes, and Services/EndpointSlices whose owner process is gone.
pub fn prepare() {
    require_cluster();
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((node, host)) = parse_netns(&name) else {
                    continue;
                };
                let owner = std::fs::read_to_string(owner_file(&name))
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                if let Some(pid) = owner {
                    if !pid_alive(pid) {
                        eprintln!("removing backend {name} left by test process {pid}");
                        teardown_slot(node, host);
                    }
                }
            }
        }
        for kind in ["service", "endpointslice"] {
            let run = kubectl(&["get", kind, "-A", "-l", OWNER_LABEL, "-o", "json"]);
            let Ok(list) = serde_json::from_str::<Value>(&run.stdout) else {
                continue;
            };
            for item in list["items"].as_array().into_iter().flatten() {
                let owner = item["metadata"]["labels"][OWNER_LABEL]
                    .as_str()
                    .and_then(|s| s.parse::<u32>().ok());
                if owner.is_some_and(|pid| !pid_alive(pid)) {
                    let (ns, name) = (
                        item["metadata"]["namespace"].as_str().unwrap_or(NAMESPACE),
                        item["metadata"]["name"].as_str().unwrap_or_default(),
                    );
                    eprintln!("removing {kind} {ns}/{name} left by an earlier test process");
                    let _ = kubectl(&[
                        "delete",
                        kind,
                        name,
                        "-n",
                        ns,
                        "--ignore-not-found",
                        "--wait=false",
                    ]);
                }
            }
        }
    });
}

fn parse_netns(name: &str) -> Option<(usize, u8)> {
    let (node, host) = name.strip_prefix(NETNS_PREFIX)?.split_once('-')?;
    Some((node.parse().ok()?, host.parse().ok()?))
}

fn slot_names(node: usize, host: u8) -> (String, String) {
    (format!("{NETNS_PREFIX}{node}-{host}"), format!("ncb{host}"))
}

/// Removes a backend slot: its processes, its veth in the node, its namespace, its claim.
fn teardown_slot(node: usize, host: u8) {
    let (netns, veth) = slot_names(node, host);
    if let Ok(pids) = run("ip", &["netns", "pids", &netns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]);
        }
    }
    let _ = run_in_node(node, "ip", &["link", "del", &veth]);
    let _ = run_in_node(
        node,
        "ip",
        &[
            "neigh",
            "del",
            &format!("10.244.{node}.{host}"),
            "dev",
            BRIDGE,
        ],
    );
    if netns_file(&netns).exists() {
        if let Err(e) = run("ip", &["netns", "del", &netns]) {
            eprintln!("cleanup: {e}");
        }
    }
    let _ = std::fs::remove_file(owner_file(&netns));
}

// ---------------------------------------------------------------- the pod bridge

/// Makes sure node `node` has its pod bridge `cni0`. The bridge CNI plugin
/// makes it with the node's first pod sandbox; when there was none yet, one
/// throwaway sandbox is run (and removed) through the node's CRI, so the bridge
/// is the plugin's own, as it would be for any pod.
pub fn ensure_bridge(node: usize) {
    static BRIDGE_LOCK: Mutex<()> = Mutex::new(());
    let _guard = BRIDGE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if run_in_node(node, "ip", &["link", "show", BRIDGE]).is_ok() {
        return;
    }
    let endpoint = cri_endpoint(&node_name(node));
    let made = std::thread::spawn(move || sandbox_once(&endpoint)).join();
    match made {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!(
            "{}: a sandbox to create {BRIDGE} failed: {e:#}",
            node_name(node)
        ),
        Err(_) => panic!("{}: creating {BRIDGE} panicked", node_name(node)),
    }
    if let Err(e) = run_in_node(node, "ip", &["link", "show", BRIDGE]) {
        panic!(
            "{}: still no {BRIDGE} after a pod sandbox ran: {e}",
            node_name(node)
        );
    }
}

fn sandbox_once(endpoint: &str) -> anyhow::Result<()> {
    use k8s_cri::v1::{
        PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest,
        StopPodSandboxRequest,
    };
    use node_agent::edge::cri::CriClient;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let uid = format!("e2e-bridge-{}-{}", std::process::id(), nonce());
    let log_dir = std::env::temp_dir().join(&uid);
    std::fs::create_dir_all(&log_dir)?;
    let result = rt.block_on(async {
        let mut cri = CriClient::connect(endpoint).await?;
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "e2e-bridge".into(),
                uid: uid.clone(),
                namespace: "e2e".into(),
                attempt: 0,
            }),
            hostname: "e2e-bridge".into(),
            log_directory: log_dir.display().to_string(),
            labels: [("nodeconfig.dev/e2e".to_string(), "bridge".to_string())].into(),
            ..Default::default()
        };
        let id = cri
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| cri.call_error("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id;
        let stopped = cri
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        let removed = cri
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        stopped.map_err(|s| cri.call_error("StopPodSandbox", s))?;
        removed.map_err(|s| cri.call_error("RemovePodSandbox", s))?;
        anyhow::Ok(())
    });
    let _ = std::fs::remove_dir_all(&log_dir);
    result
}

// ---------------------------------------------------------------- backends

/// busybox httpd on node `node`'s pod bridge, answering every GET with its name.
/// Dropping it stops the server and removes its namespace and veth.
pub struct Backend {
    pub name: String,
    pub node: usize,
    pub ip: Ipv4Addr,
    host: u8,
    netns: String,
    veth: String,
    server: Option<Child>,
    dir: PathBuf,
}

impl Backend {
    /// Starts a backend on node `node` (1-based) and waits until the node reaches it.
    #[track_caller]
    pub fn start(node: usize, name: &str) -> Backend {
        ensure_bridge(node);
        let host = claim_slot(node);
        let (netns, veth) = slot_names(node, host);
        let mut backend = Backend {
            name: name.to_string(),
            node,
            ip: Ipv4Addr::new(10, 244, node as u8, host),
            host,
            netns,
            veth,
            server: None,
            dir: std::env::temp_dir().join(format!(
                "nc-e2e-backend-{}-{}-{host}",
                std::process::id(),
                node
            )),
        };
        if let Err(e) = backend.plumb() {
            panic!("backend {name} on {}: {e}", node_name(node));
        }
        if let Err(e) = backend.serve() {
            panic!("backend {name} on {}: {e}", node_name(node));
        }
        backend.wait_ready();
        backend
    }

    pub fn node_name(&self) -> String {
        node_name(self.node)
    }

    /// The backend's own URL (bypassing any Service).
    pub fn url(&self) -> String {
        format!("http://{}:{BACKEND_PORT}/", self.ip)
    }

    fn plumb(&self) -> Result<(), String> {
        let ip = format!("{}/24", self.ip);
        let gateway = format!("10.244.{}.1", self.node);
        // A fixed MAC per address: a neighbour entry the node kept from an earlier
        // backend at this address is still right (else the node talks to a MAC
        // that is gone until the entry expires).
        let mac = format!("02:00:0a:f4:{:02x}:{:02x}", self.node, self.host);
        let _ = run_in_node(
            self.node,
            "ip",
            &["neigh", "del", &self.ip.to_string(), "dev", BRIDGE],
        );
        run_in_node(
            self.node,
            "ip",
            &[
                "link",
                "add",
                &self.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                &mac,
                "netns",
                &self.netns,
            ],
        )?;
        run_in_netns(&self.netns, "ip", &["link", "set", "lo", "up"])?;
        run_in_netns(&self.netns, "ip", &["addr", "add", &ip, "dev", "eth0"])?;
        run_in_netns(&self.netns, "ip", &["link", "set", "eth0", "up"])?;
        run_in_netns(
            &self.netns,
            "ip",
            &["route", "add", "default", "via", &gateway, "dev", "eth0"],
        )?;
        run_in_node(
            self.node,
            "ip",
            &["link", "set", &self.veth, "master", BRIDGE],
        )?;
        run_in_node(self.node, "ip", &["link", "set", &self.veth, "up"])?;
        Ok(())
    }

    fn serve(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("mkdir {}: {e}", self.dir.display()))?;
        std::fs::write(self.dir.join("index.html"), format!("{}\n", self.name))
            .map_err(|e| format!("write index.html: {e}"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns_file(&self.netns).display()))
            .args([
                "--",
                "busybox",
                "httpd",
                "-f",
                "-p",
                &BACKEND_PORT.to_string(),
                "-h",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start busybox httpd: {e}"))?;
        self.server = Some(child);
        Ok(())
    }

    #[track_caller]
    fn wait_ready(&mut self) {
        let url = self.url();
        let (node, name) = (self.node, self.name.clone());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("backend {name}: httpd exited with {status}");
            }
            let last = match get_from_node(node, &url) {
                Ok(body) if body == name => return,
                Ok(body) => format!("answered {body:?}"),
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "backend {name} at {url} does not answer from {}: {last}",
                node_name(node)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Claims a free host number on node `node` by creating its namespace.
fn claim_slot(node: usize) -> u8 {
    std::fs::create_dir_all(owners_dir())
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", owners_dir().display()));
    let ipam = state_dir()
        .join("nodes")
        .join(node_name(node))
        .join("cni/ipam")
        .join(format!("{}-pods", node_name(node)));
    for host in FIRST_HOST..=LAST_HOST {
        if ipam.join(format!("10.244.{node}.{host}")).exists() {
            continue; // host-local gave it to a pod
        }
        let (netns, _) = slot_names(node, host);
        if run("ip", &["netns", "add", &netns]).is_ok() {
            std::fs::write(owner_file(&netns), std::process::id().to_string())
                .unwrap_or_else(|e| panic!("write {}: {e}", owner_file(&netns).display()));
            return host;
        }
    }
    panic!(
        "no free backend address 10.244.{node}.{FIRST_HOST}-{LAST_HOST} (see `ip netns list | grep {NETNS_PREFIX}`)"
    );
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        teardown_slot(self.node, self.host);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- clients

/// One GET from inside node `node`'s namespace (busybox wget, 2 s at most):
/// the body, trimmed, or what wget said.
pub fn get_from_node(node: usize, url: &str) -> Result<String, String> {
    let out = exec_in_node(
        &node_name(node),
        "timeout",
        ["2", "busybox", "wget", "-q", "-O", "-", url],
    )
    .map_err(|e| format!("cannot run nsenter: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if said.is_empty() {
            format!("wget {url}: {} (timed out?)", out.status)
        } else {
            said
        })
    }
}

/// One GET from inside a backend's namespace, as a pod on its node would
/// send it (through the node's FORWARD path, not its OUTPUT path).
pub fn get_from_backend(client: &Backend, url: &str) -> Result<String, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns_file(&client.netns).display()))
        .args([
            "--", "timeout", "2", "busybox", "wget", "-q", "-O", "-", url,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run nsenter: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if said.is_empty() {
            format!("wget {url}: {} (timed out?)", out.status)
        } else {
            said
        })
    }
}

/// `count` GETs one after another from inside node `node` (one shell, so it is
/// quick): each one's body, or `None` when it failed.
pub fn get_many_from_node(node: usize, url: &str, count: usize) -> Vec<Option<String>> {
    let script = r#"i=0; while [ "$i" -lt "$2" ]; do i=$((i+1)); if b=$(timeout 2 busybox wget -q -O - "$1" 2>/dev/null); then echo "ok $b"; else echo "failed"; fi; done"#;
    let out = exec_in_node(
        &node_name(node),
        "sh",
        ["-c", script, "sh", url, &count.to_string()],
    )
    .expect("run nsenter");
    let lines: Vec<Option<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.strip_prefix("ok ").map(|b| b.trim().to_string()))
        .collect();
    assert_eq!(
        lines.len(),
        count,
        "{} GETs from {}: {}",
        count,
        node_name(node),
        output_text(&out)
    );
    lines
}

/// How many answers came from each backend name (failures under `"<failed>"`).
pub fn tally(answers: &[Option<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts
            .entry(a.clone().unwrap_or_else(|| "<failed>".into()))
            .or_insert(0) += 1;
    }
    counts
}

/// `iptables-save -t TABLE` inside node `node`.
pub fn iptables_save(node: usize, table: &str) -> String {
    run_in_node(node, "iptables-save", &["-t", table]).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------- Services and EndpointSlices

/// How a [`TestService`] is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceOptions {
    /// `type: NodePort` (the node port is allocated by the API server).
    pub node_port: bool,
    /// `sessionAffinity: ClientIP`.
    pub client_ip_affinity: bool,
}

/// A Service without selector in [`NAMESPACE`] and the one EndpointSlice the
/// test writes for it; both are deleted when dropped.
pub struct TestService {
    pub name: String,
    pub cluster_ip: String,
    pub node_port: Option<u16>,
    slice: String,
}

impl TestService {
    /// Creates the Service (no EndpointSlice yet) and reads its ClusterIP.
    #[track_caller]
    pub fn create(name: &str, options: ServiceOptions) -> TestService {
        let mut spec = json!({
            "type": if options.node_port { "NodePort" } else { "ClusterIP" },
            "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP", "targetPort": BACKEND_PORT}],
        });
        if options.client_ip_affinity {
            spec["sessionAffinity"] = json!("ClientIP");
        }
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": owner_labels()},
            "spec": spec,
        });
        let mut made = TestService {
            name: name.to_string(),
            cluster_ip: String::new(),
            node_port: None,
            slice: format!("{name}-e2e"),
        };
        apply(&service.to_string()).expect_ok("apply service");
        let svc = get_json("service", name, Some(NAMESPACE))
            .unwrap_or_else(|| panic!("service {name} is not there after apply"));
        made.cluster_ip = svc["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            made.cluster_ip.starts_with("10.96."),
            "service {name} got clusterIP {:?}",
            made.cluster_ip
        );
        made.node_port = svc["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .map(|p| p as u16);
        if options.node_port {
            assert!(
                made.node_port.is_some(),
                "service {name} got no nodePort: {svc}"
            );
        }
        made
    }

    /// `namespace/name:port`, as the rules' comments name this Service's port.
    pub fn port_label(&self) -> String {
        format!("{NAMESPACE}/{}:{PORT_NAME}", self.name)
    }

    /// The URL of the Service's ClusterIP.
    pub fn url(&self) -> String {
        format!("http://{}:{SERVICE_PORT}/", self.cluster_ip)
    }

    /// Writes the EndpointSlice: these backends, ready, on their nodes (an empty
    /// list leaves the Service without endpoints).
    #[track_caller]
    pub fn set_endpoints(&self, backends: &[&Backend]) {
        let endpoints: Vec<Value> = backends
            .iter()
            .map(|b| json!({"addresses": [b.ip.to_string()], "conditions": {"ready": true}, "nodeName": b.node_name()}))
            .collect();
        let mut labels = owner_labels();
        labels["kubernetes.io/service-name"] = json!(self.name);
        labels["endpointslice.kubernetes.io/managed-by"] = json!("e2e.nodeconfig.dev");
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": self.slice, "namespace": NAMESPACE, "labels": labels},
            "addressType": "IPv4",
            "ports": [{"name": PORT_NAME, "port": BACKEND_PORT, "protocol": "TCP"}],
            "endpoints": endpoints,
        });
        apply(&slice.to_string()).expect_ok("apply endpointslice");
    }

    /// Deletes the Service and its EndpointSlice now.
    pub fn delete(&self) {
        for (kind, name) in [("service", &self.name), ("endpointslice", &self.slice)] {
            let run = kubectl(&[
                "delete",
                kind,
                name,
                "-n",
                NAMESPACE,
                "--ignore-not-found",
                "--wait=false",
            ]);
            if !run.ok {
                eprintln!(
                    "cleanup: kubectl delete {kind} {name}: {}",
                    run.stderr.trim()
                );
            }
        }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.delete();
    }
}

fn owner_labels() -> Value {
    let mut labels = json!({});
    labels[OWNER_LABEL] = json!(std::process::id().to_string());
    labels
}

/// A name unique to this test process: `px-<what>-<pid>`.
pub fn unique_name(what: &str) -> String {
    format!("px-{what}-{}", std::process::id())
}

/// Waits until node `node`'s nat table DNATs `svc`'s port to each backend (its
/// rules for them are in place), so what follows measures the full endpoint set.
#[track_caller]
pub fn await_dnat_to(node: usize, svc: &TestService, backends: &[&Backend], timeout: Duration) {
    let label = svc.port_label();
    let what = format!(
        "{} to DNAT {label} to {:?}",
        node_name(node),
        backends.iter().map(|b| b.ip).collect::<Vec<_>>()
    );
    eventually(timeout, &what, || {
        backends
            .iter()
            .all(|b| dnat_rule_present(node, svc, b))
            .then_some(())
    });
}

/// Whether node `node`'s nat table has `svc`'s DNAT rule to `backend`.
pub fn dnat_rule_present(node: usize, svc: &TestService, backend: &Backend) -> bool {
    let (label, target) = (
        svc.port_label(),
        format!("--to-destination {}:{BACKEND_PORT}", backend.ip),
    );
    iptables_save(node, "nat")
        .lines()
        .any(|l| l.contains(&label) && l.contains(&target))
}
