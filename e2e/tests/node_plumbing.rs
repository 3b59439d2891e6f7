//! The node plumbing end to end, through CRI as the agent will drive it: a pod
//! sandbox with CNI networking and two containers on nc-node-1 of a running
//! local cluster (`e2e/cluster up`).
//!
//! Proves: the node's containerd runs pods from the locally built images; the two
//! containers share the pod's network namespace (one fetches from the other over
//! 127.0.0.1); the pod gets an address from its node's pod CIDR; the host reaches
//! the pod by that address, and so does another node (routes via the host).
//!
//! Needs the cluster: when nc-node-1's CRI socket does not answer, the test fails.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use node_agent::edge::cri::CriClient;
use nodeconfig_e2e::node;

const BUSYBOX: &str = "nodeconfig.local/busybox:1.35";
const PORT: u16 = 8080;

/// Removes the sandbox (and with it its containers and network) when dropped,
/// also when the test failed or panicked half-way. Drop cannot await, so it
/// runs the CRI calls on a thread with its own small runtime.
struct SandboxGuard {
    endpoint: String,
    sandbox_id: Option<String>,
    log_dir: PathBuf,
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        if let Some(id) = self.sandbox_id.take() {
            let endpoint = self.endpoint.clone();
            let cleanup = std::thread::spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut cri = CriClient::connect(&endpoint).await?;
                    cri.runtime
                        .stop_pod_sandbox(StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await
                        .map_err(|s| cri.call_error("StopPodSandbox", s))?;
                    cri.runtime
                        .remove_pod_sandbox(RemovePodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await
                        .map_err(|s| cri.call_error("RemovePodSandbox", s))?;
                    Ok(())
                })
            });
            match cleanup.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("cleanup of the test sandbox failed: {e:#}"),
                Err(_) => eprintln!("cleanup of the test sandbox panicked"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn container(name: &str, script: String) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// HTTP/1.0 GET from the host (test process), body returned.
fn http_get(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

#[tokio::test]
async fn pod_on_node_1_runs_shares_localhost_and_is_routable() -> Result<()> {
    let node1 = node::node_name(1);
    let endpoint = node::cri_endpoint(&node1);
    let mut cri = CriClient::connect(&endpoint).await.with_context(|| {
        format!("{node1}'s containerd does not answer; is the local cluster up (e2e/cluster up)?")
    })?;
    let version = cri.version().await?;
    println!(
        "{node1}: {} {} (CRI {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );

    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let uid = format!("node-plumbing-{}-{nonce}", std::process::id());
    let token = format!("token-{nonce}");
    let log_dir = std::env::temp_dir().join(&uid);
    std::fs::create_dir_all(&log_dir)?;
    let mut guard = SandboxGuard {
        endpoint: endpoint.clone(),
        sandbox_id: None,
        log_dir: log_dir.clone(),
    };

    let sandbox_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "node-plumbing".into(),
            uid: uid.clone(),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: "node-plumbing".into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([(
            "nodeconfig.dev/e2e".to_string(),
            "node-plumbing".to_string(),
        )]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let started = Instant::now();
    let sandbox_id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|s| cri.call_error("RunPodSandbox", s))?
        .into_inner()
        .pod_sandbox_id;
    guard.sandbox_id = Some(sandbox_id.clone());

    let server = container(
        "server",
        format!(
            "mkdir -p /www && echo {token} > /www/index.html && exec httpd -f -p {PORT} -h /www"
        ),
    );
    // (Debian's busybox-static 1.35 wget segfaults with -T, hence timeout(1).)
    let client = container(
        "client",
        format!(
            "while :; do timeout 2 wget -q -O /tmp/got.part http://127.0.0.1:{PORT}/ && mv /tmp/got.part /tmp/got; sleep 0.1; done"
        ),
    );
    let mut ids = Vec::new();
    for config in [server, client] {
        let id = cri
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .map_err(|s| cri.call_error("CreateContainer", s))?
            .into_inner()
            .container_id;
        cri.runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|s| cri.call_error("StartContainer", s))?;
        ids.push(id);
    }
    println!(
        "sandbox and 2 containers started in {:?}",
        started.elapsed()
    );
    let client_id = ids[1].clone();

    // The client container fetched the token from the server over localhost.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cri
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: client_id.clone(),
                cmd: vec!["cat".into(), "/tmp/got".into()],
                timeout: 5,
            })
            .await
            .map_err(|s| cri.call_error("ExecSync", s))?
            .into_inner();
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.exit_code == 0 && got == token {
            println!(
                "client got the token over 127.0.0.1 after {:?}",
                started.elapsed()
            );
            break;
        }
        if Instant::now() > deadline {
            let server_log =
                std::fs::read_to_string(log_dir.join("server.log")).unwrap_or_default();
            let client_log =
                std::fs::read_to_string(log_dir.join("client.log")).unwrap_or_default();
            bail!(
                "client container did not get {token:?} from 127.0.0.1:{PORT} (last: exit {} stdout {got:?} stderr {:?})\nserver log:\n{server_log}\nclient log:\n{client_log}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The sandbox got an address in nc-node-1's pod CIDR.
    let status = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.clone(),
            verbose: false,
        })
        .await
        .map_err(|s| cri.call_error("PodSandboxStatus", s))?
        .into_inner()
        .status
        .context("PodSandboxStatus without status")?;
    let ip_text = status.network.map(|n| n.ip).unwrap_or_default();
    let pod_ip: Ipv4Addr = ip_text
        .parse()
        .with_context(|| format!("pod IP {ip_text:?} is not an IPv4 address"))?;
    ensure!(
        pod_ip.octets()[..3] == [10, 244, 1] && pod_ip.octets()[3] > 1,
        "pod IP {pod_ip} is not a pod address in {} (node 1's pod CIDR)",
        node::pod_cidr(1)
    );
    println!("pod IP {pod_ip}");

    // The host reaches the pod by its IP (route 10.244.1.0/24 via nc-node-1).
    let addr = SocketAddr::from((pod_ip, PORT));
    let body = tokio::task::spawn_blocking(move || http_get(addr)).await??;
    ensure!(
        body.trim() == token,
        "host fetched {body:?} from {addr}, expected {token:?}"
    );
    println!("host reached {addr}");

    // Another node reaches it too: nc-node-2 -> host -> nc-node-1 -> pod.
    if node::node_count() >= 2 {
        let node2 = node::node_name(2);
        let url = format!("http://{pod_ip}:{PORT}/");
        let out = tokio::task::spawn_blocking(move || {
            node::exec_in_node(
                &node2,
                "timeout",
                ["5", "busybox", "wget", "-q", "-O", "-", &url],
            )
        })
        .await??;
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure!(
            out.status.success() && got == token,
            "{} could not fetch the token from {addr}: {} stdout {got:?} stderr {:?}",
            node::node_name(2),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{} reached {addr} across nodes", node::node_name(2));
    } else {
        println!("only one node (NODECONFIG_NODES): cross-node check not run");
    }

    drop(guard); // stop and remove the sandbox now, so its cost is in the test's time
    println!("done in {:?}", started.elapsed());
    Ok(())
}
