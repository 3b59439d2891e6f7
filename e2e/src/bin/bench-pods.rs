//! Benchmark: pod start-up latency of the agent in Kubelet mode, against the
//! floor of the same CRI calls made by a bare client.
//!
//! On one node (nc-node-1 by default), N pods one after another and N at once:
//!
//! - *floor*: a bare CRI client on the node's containerd socket runs
//!   RunPodSandbox, CreateContainer and StartContainer per pod, with the
//!   sandbox and container configs the agent's own builders make for the same
//!   Pod (labels replaced by `nodeconfig.dev/bench=floor`, so the agent leaves
//!   them alone). One sample: from the first call until StartContainer returns.
//! - *agent*: N Pods (busybox `sleep 3600`, `spec.nodeName` set, so the
//!   scheduler is out of the measure as it is out of the floor) in namespace
//!   `bench-pods`. One sample: from sending the create request until a watch on
//!   the namespace shows the Pod Running with Ready=True.
//!
//! One after another, the floor's pods and the agent's take turns, so that the
//! load of a shared machine falls on both alike; at once, the floor's batch
//! runs just before the agent's. Also the agent's RSS with 0 and with N pods. Prints one table, and writes it
//! as Markdown to `--table FILE` when given. Run it through `e2e/bench/pods.sh`.
//!
//!   bench-pods [--pods N] [--node NAME] [--table FILE] [--trace]
//!
//! `--trace` prints each agent Pod's create and ready times (UTC, ms) on
//! stderr, to set beside the agent's log.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, ServiceAccount};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use node_agent::edge::cri::CriClient;
use node_agent::pods::runtime_view::LABEL_POD_NAMESPACE;
use node_agent::pods::{
    container_config, parse_resolv_conf, sandbox_config, ClusterDns, ContainerContext,
    SandboxContext,
};
use nodeconfig_e2e::node::{cri_endpoint, run_dir};
use tokio::sync::watch;

const NS: &str = "bench-pods";
const LABEL: &str = "nodeconfig.dev/bench";
const AGENT_VALUE: &str = "pods";
const FLOOR_VALUE: &str = "floor";
/// CRI metadata namespace of the floor's sandboxes (no such API namespace).
const FLOOR_NS: &str = "bench-pods-floor";
const IMAGE: &str = "nodeconfig.local/busybox:1.35";
/// How long one pod may take before the run fails.
const POD_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    pods: usize,
    node: String,
    table: Option<PathBuf>,
    /// Print each agent Pod's create and ready times (UTC), to match with the agent's log.
    trace: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        pods: 30,
        node: "nc-node-1".into(),
        table: None,
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--pods" => args.pods = value()?.parse().context("--pods")?,
            "--node" => args.node = value()?,
            "--table" => args.table = Some(value()?.into()),
            "--trace" => args.trace = true,
            "-h" | "--help" => {
                println!("usage: bench-pods [--pods N] [--node NAME] [--table FILE] [--trace]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (usage: bench-pods [--pods N] [--node NAME] [--table FILE] [--trace])"),
        }
    }
    if args.pods == 0 {
        bail!("--pods must be at least 1");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

/// Samples (ms) of one mode.
#[derive(Default)]
struct Samples {
    sequential: Vec<f64>,
    concurrent: Vec<f64>,
}

/// The agent's memory at one moment, in MiB.
#[derive(Clone, Copy)]
struct Mem {
    rss: f64,
    hwm: f64,
}

struct Report {
    pods: usize,
    node: String,
    floor: Samples,
    agent: Samples,
    agent_profile: String,
    mem_0: Mem,
    mem_seq: Mem,
    mem_con: Mem,
    mem_after: Option<Mem>,
    machine: String,
    others: String,
}

async fn bench(args: Args) -> Result<()> {
    let agent_pid = agent_pid(&args.node)?;
    let agent_profile = std::fs::read_link(format!("/proc/{agent_pid}/exe"))
        .map(|p| {
            if p.to_string_lossy().contains("/release/") {
                "release"
            } else {
                "debug"
            }
        })
        .unwrap_or("unknown")
        .to_string();
    eprintln!(
        "agent of {}: pid {agent_pid} ({agent_profile} build)",
        args.node
    );
    let load_before = load_average();

    let config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(nodeconfig_e2e::admin_kubeconfig())?,
        &Default::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let cri = CriClient::connect(&cri_endpoint(&args.node)).await?;
    let floor = Floor::new(&args.node, cri.clone());

    // What a killed earlier run left behind.
    floor.cleanup().await?;
    ensure_namespace(&client).await?;
    delete_pods(&pods, &cri).await?;

    let others = other_pods(&client)
        .await
        .unwrap_or_else(|e| format!("unknown ({e})"));
    eprintln!("other pods on the cluster: {others}");

    let measured = measure(&args, agent_pid, &pods, &cri, &floor).await;
    if measured.is_err() {
        // Leave the node as it was found.
        let _ = floor.cleanup().await;
        let _ = delete_pods(&pods, &cri).await;
    }
    let Measured {
        floor: floor_samples,
        agent: agent_samples,
        mem_0,
        mem_seq,
        mem_con,
        mem_after,
    } = measured?;

    let load_after = load_average();
    let report = Report {
        pods: args.pods,
        node: args.node.clone(),
        floor: floor_samples,
        agent: agent_samples,
        agent_profile,
        mem_0,
        mem_seq,
        mem_con,
        mem_after,
        machine: format!(
            "{} cores, kernel {}; load average {load_before} before, {load_after} after",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
        ),
        others,
    };
    let text = report.text();
    println!("\n{text}");
    if let Some(path) = &args.table {
        std::fs::write(path, report.markdown())
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// What [`measure`] found.
struct Measured {
    floor: Samples,
    agent: Samples,
    mem_0: Mem,
    mem_seq: Mem,
    mem_con: Mem,
    mem_after: Option<Mem>,
}

/// The floor's and the agent's runs, one after another and at once.
async fn measure(
    args: &Args,
    agent_pid: u32,
    pods: &Api<Pod>,
    cri: &CriClient,
    floor: &Floor,
) -> Result<Measured> {
    let n = args.pods;
    let (mut floor_samples, mut agent_samples) = (Samples::default(), Samples::default());
    let readiness = Readiness::start(pods.clone()).await?;
    same_agent(&args.node, agent_pid)?;
    let mem_0 = read_mem(agent_pid)?;
    eprintln!(
        "agent with 0 pods: RSS {:.1} MiB (peak since start {:.1} MiB)",
        mem_0.rss, mem_0.hwm
    );
    // Peak RSS from here on.
    let _ = std::fs::write(format!("/proc/{agent_pid}/clear_refs"), "5");

    // 1. One after another, the floor's and the agent's pods in turn, so that
    // the load of a shared machine falls on both alike.
    eprintln!(
        "== {n} pods one after another, in turn: a bare CRI client (floor), then a Pod (agent)"
    );
    let mut sandbox_ms = Vec::new();
    for i in 0..n {
        let (ms, sandbox) = floor.start_one(&format!("fs-{i:03}")).await?;
        floor_samples.sequential.push(ms);
        sandbox_ms.push(sandbox);
        let ms = start_pod(
            pods,
            &readiness,
            format!("bp-seq-{i:03}"),
            &args.node,
            args.trace,
        )
        .await?;
        agent_samples.sequential.push(ms);
    }
    eprintln!(
        "   floor: {}; of which RunPodSandbox {}",
        summary(&floor_samples.sequential),
        summary(&sandbox_ms)
    );
    eprintln!("   agent: {}", summary(&agent_samples.sequential));
    floor.cleanup().await?;
    same_agent(&args.node, agent_pid)?;
    let mem_seq = read_mem(agent_pid)?;
    eprintln!("agent with {n} pods: RSS {:.1} MiB", mem_seq.rss);
    delete_pods(pods, cri).await?;

    // 2. All at once: the floor's batch, then the agent's.
    eprintln!("== floor: {n} pods at once");
    let started =
        futures::future::join_all((0..n).map(|i| floor.start_one_named(format!("fc-{i:03}"))))
            .await;
    let mut sandbox_ms = Vec::new();
    for r in started {
        let (ms, sandbox) = r?;
        floor_samples.concurrent.push(ms);
        sandbox_ms.push(sandbox);
    }
    eprintln!(
        "   {}; of which RunPodSandbox {}",
        summary(&floor_samples.concurrent),
        summary(&sandbox_ms)
    );
    floor.cleanup().await?;

    eprintln!("== agent: {n} Pods at once");
    let started = futures::future::join_all((0..n).map(|i| {
        start_pod(
            pods,
            &readiness,
            format!("bp-con-{i:03}"),
            &args.node,
            args.trace,
        )
    }))
    .await;
    for r in started {
        agent_samples.concurrent.push(r?);
    }
    eprintln!("   {}", summary(&agent_samples.concurrent));
    same_agent(&args.node, agent_pid)?;
    let mem_con = read_mem(agent_pid)?;
    eprintln!(
        "agent with {n} pods: RSS {:.1} MiB, peak {:.1} MiB",
        mem_con.rss, mem_con.hwm
    );
    delete_pods(pods, cri).await?;
    readiness.stop();
    // The agent lets go of what it held for the pods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    same_agent(&args.node, agent_pid)?;
    let mem_after = read_mem(agent_pid).ok();
    Ok(Measured {
        floor: floor_samples,
        agent: agent_samples,
        mem_0,
        mem_seq,
        mem_con,
        mem_after,
    })
}

// ---------------------------------------------------------------- the floor

/// A bare CRI client making the agent's calls for a pod, and nothing else.
struct Floor {
    cri: CriClient,
    node: String,
    pod_logs_root: PathBuf,
    host_dns: cri::DnsConfig,
}

impl Floor {
    fn new(node: &str, cri: CriClient) -> Self {
        Self {
            cri,
            node: node.to_string(),
            pod_logs_root: nodeconfig_e2e::state_dir()
                .join("nodes")
                .join(node)
                .join("pod-logs"),
            host_dns: parse_resolv_conf(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
        }
    }

    /// [`Self::start_one`] with an owned name, for a batch of futures.
    async fn start_one_named(&self, name: String) -> Result<(f64, f64)> {
        self.start_one(&name).await
    }

    /// Runs one pod's sandbox and container; returns the time taken in ms,
    /// in all and for RunPodSandbox.
    async fn start_one(&self, name: &str) -> Result<(f64, f64)> {
        let mut pod = bench_pod(name, &self.node);
        pod.metadata.namespace = Some(FLOOR_NS.into());
        pod.metadata.uid = Some(format!("floor-{}-{name}", std::process::id()));
        let labels: HashMap<String, String> = [(LABEL.to_string(), FLOOR_VALUE.to_string())].into();
        let mut sandbox = sandbox_config(
            &pod,
            &SandboxContext {
                node_name: &self.node,
                pod_logs_root: &self.pod_logs_root,
                attempt: 0,
                host_dns: &self.host_dns,
                cluster_dns: ClusterDns::NONE,
            },
        )?;
        sandbox.labels = labels.clone();
        let container = &pod.spec.as_ref().context("pod spec")?.containers[0];
        let mut config = container_config(
            &pod,
            container,
            ContainerContext {
                restart_count: 0,
                env: Vec::new(),
                mounts: Vec::new(),
                spec_hash: "floor",
                node_memory_capacity: 0,
                image_user: None,
                pid_target: None,
            },
        )?;
        config.labels = labels;
        config.annotations = HashMap::new();

        let mut rt = self.cri.runtime.clone();
        let t0 = Instant::now();
        let sandbox_id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| anyhow!("floor {name}: RunPodSandbox: {s}"))?
            .into_inner()
            .pod_sandbox_id;
        let sandbox_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id,
                config: Some(config),
                sandbox_config: Some(sandbox),
            })
            .await
            .map_err(|s| anyhow!("floor {name}: CreateContainer: {s}"))?
            .into_inner()
            .container_id;
        rt.start_container(cri::StartContainerRequest { container_id: id })
            .await
            .map_err(|s| anyhow!("floor {name}: StartContainer: {s}"))?;
        Ok((t0.elapsed().as_secs_f64() * 1000.0, sandbox_ms))
    }

    /// Stops and removes the floor's sandboxes (with their containers) and their log directories.
    async fn cleanup(&self) -> Result<()> {
        let mut rt = self.cri.runtime.clone();
        let filter = cri::PodSandboxFilter {
            label_selector: [(LABEL.to_string(), FLOOR_VALUE.to_string())].into(),
            ..Default::default()
        };
        let sandboxes = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .map_err(|s| anyhow!("ListPodSandbox: {s}"))?
            .into_inner()
            .items;
        let removed = futures::future::join_all(sandboxes.iter().map(|s| {
            let mut rt = self.cri.runtime.clone();
            let id = s.id.clone();
            async move {
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map_err(|s| anyhow!("StopPodSandbox {id}: {s}"))?;
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map_err(|s| anyhow!("RemovePodSandbox {id}: {s}"))?;
                anyhow::Ok(())
            }
        }))
        .await;
        for r in removed {
            r?;
        }
        if let Ok(dir) = std::fs::read_dir(&self.pod_logs_root) {
            for entry in dir.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{FLOOR_NS}_"))
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the agent

/// The bench Pod: busybox `sleep 3600` on `node`, no probes (Ready = running).
fn bench_pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            labels: Some(BTreeMap::from([(
                LABEL.to_string(),
                AGENT_VALUE.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "sleep".into(),
                image: Some(IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(vec!["sleep".into(), "3600".into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// When the watch first showed each Pod (by uid) Running with Ready=True.
struct Readiness {
    seen: watch::Receiver<HashMap<String, Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Readiness {
    /// Starts the watch on the bench Pods and returns once its initial list is done.
    async fn start(pods: Api<Pod>) -> Result<Self> {
        let (tx, seen) = watch::channel(HashMap::new());
        let (init_tx, init_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut init_tx = Some(init_tx);
            let cfg = watcher::Config::default().labels(&format!("{LABEL}={AGENT_VALUE}"));
            let mut stream = watcher(pods, cfg).boxed();
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        if is_running_and_ready(&pod) {
                            if let Some(uid) = pod.metadata.uid {
                                tx.send_if_modified(|m| {
                                    if m.contains_key(&uid) {
                                        return false;
                                    }
                                    m.insert(uid, now);
                                    true
                                });
                            }
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(t) = init_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("   watch error (the watcher retries): {e}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), init_rx)
            .await
            .context("the watch on the bench Pods did not start in 30 s")??;
        Ok(Self { seen, task })
    }

    /// When the Pod `uid` was first seen ready.
    async fn ready_at(&self, uid: &str) -> Result<Instant> {
        let mut rx = self.seen.clone();
        let map = rx.wait_for(|m| m.contains_key(uid)).await?;
        Ok(map[uid])
    }

    fn stop(self) {
        self.task.abort();
    }
}

fn is_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Creates the Pod and waits until the watch shows it ready; returns the latency in ms.
async fn start_pod(
    pods: &Api<Pod>,
    readiness: &Readiness,
    name: String,
    node: &str,
    trace: bool,
) -> Result<f64> {
    let pod = bench_pod(&name, node);
    let wall = std::time::SystemTime::now();
    let t0 = Instant::now();
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("create pod {name}"))?;
    let uid = created.metadata.uid.context("created pod has no uid")?;
    let ready = tokio::time::timeout(POD_TIMEOUT, readiness.ready_at(&uid))
        .await
        .map_err(|_| {
            anyhow!("pod {name} not Running and Ready after {POD_TIMEOUT:?}; see the agent's log")
        })??;
    let took = ready.saturating_duration_since(t0);
    if trace {
        eprintln!(
            "   trace {name} created {} ready {} ({} ms)",
            utc(wall),
            utc(wall + took),
            took.as_millis()
        );
    }
    Ok(took.as_secs_f64() * 1000.0)
}

/// Time of day in UTC, `HH:MM:SS.mmm`, as the agent's log writes it.
fn utc(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

async fn ensure_namespace(client: &Client) -> Result<()> {
    let ns_api: Api<Namespace> = Api::all(client.clone());
    if ns_api.get_opt(NS).await?.is_none() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(NS.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        ns_api.create(&PostParams::default(), &ns).await?;
    }
    // Pods are refused until the controller-manager made the default ServiceAccount.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sas.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("no ServiceAccount default in namespace {NS} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Deletes the bench Pods, waits until they are gone from the API server and
/// their sandboxes from the node's runtime.
async fn delete_pods(pods: &Api<Pod>, cri: &CriClient) -> Result<()> {
    let lp = ListParams::default().labels(&format!("{LABEL}={AGENT_VALUE}"));
    let t0 = Instant::now();
    let n = pods.list_metadata(&lp).await?.items.len();
    if n == 0 {
        return Ok(());
    }
    pods.delete_collection(&DeleteParams::default(), &lp)
        .await?;
    loop {
        let left = pods.list_metadata(&lp).await?.items.len();
        if left == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(180) {
            bail!("{left} bench Pods still there 180 s after their deletion");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let gone_api = t0.elapsed().as_secs_f64();
    let mut rt = cri.runtime.clone();
    let filter = cri::PodSandboxFilter {
        label_selector: [(LABEL_POD_NAMESPACE.to_string(), NS.to_string())].into(),
        ..Default::default()
    };
    let left = loop {
        let left = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter.clone()),
            })
            .await
            .map_err(|s| anyhow!("ListPodSandbox: {s}"))?
            .into_inner()
            .items
            .len();
        if left == 0 || t0.elapsed() > Duration::from_secs(120) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "   {n} Pods deleted: gone from the API server after {gone_api:.1} s, {}",
        if left == 0 {
            format!(
                "their sandboxes removed after {:.1} s",
                t0.elapsed().as_secs_f64()
            )
        } else {
            format!(
                "{left} sandboxes still in the runtime after {:.0} s",
                t0.elapsed().as_secs_f64()
            )
        }
    );
    Ok(())
}

/// Pods of other namespaces on the cluster now, by namespace and node.
async fn other_pods(client: &Client) -> Result<String> {
    let all: Api<Pod> = Api::all(client.clone());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in all.list(&ListParams::default()).await?.items {
        let ns = p.metadata.namespace.unwrap_or_default();
        if ns == NS {
            continue;
        }
        let node = p
            .spec
            .and_then(|s| s.node_name)
            .unwrap_or_else(|| "unscheduled".into());
        *counts.entry(format!("{ns} on {node}")).or_default() += 1;
    }
    if counts.is_empty() {
        return Ok("none".into());
    }
    Ok(counts
        .iter()
        .map(|(k, n)| format!("{n} in {k}"))
        .collect::<Vec<_>>()
        .join(", "))
}

// ---------------------------------------------------------------- measures

fn agent_pid(node: &str) -> Result<u32> {
    let file = run_dir()
        .join("nodeconfig")
        .join(format!("agent-{node}.pid"));
    let pid: u32 = std::fs::read_to_string(&file)
        .with_context(|| format!("read {} (is the cluster up?)", file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("pid in {}", file.display()))?;
    std::fs::metadata(format!("/proc/{pid}"))
        .with_context(|| format!("agent of {node} (pid {pid}) is not running"))?;
    Ok(pid)
}

/// Fails when the node's agent is no longer the process measured (something
/// else restarted it: the figures would mix two processes, maybe two builds).
fn same_agent(node: &str, pid: u32) -> Result<()> {
    match agent_pid(node) {
        Ok(now) if now == pid => Ok(()),
        Ok(now) => bail!("the agent of {node} was restarted during the run (pid {pid}, now {now}); figures discarded"),
        Err(e) => Err(e.context(format!("the agent of {node} (pid {pid}) is gone; figures discarded"))),
    }
}

fn read_mem(pid: u32) -> Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("agent (pid {pid}) exited"))?;
    let field = |name: &str| -> Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(kib / 1024.0)
    };
    Ok(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Nearest-rank percentile (with 30 samples, p99 is the largest).
fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (s.len() as f64) - 1.0).ceil().max(0.0) as usize;
    Some(s[idx.min(s.len() - 1)])
}

fn summary(v: &[f64]) -> String {
    format!(
        "p50 {} ms, p99 {} ms, min {} ms (n={})",
        fmt(pct(v, 50.0), 0),
        fmt(pct(v, 99.0), 0),
        fmt(pct(v, 0.0), 0),
        v.len()
    )
}

// ---------------------------------------------------------------- output

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

impl Report {
    /// Table rows: mode, floor p50, floor p99, agent p50, agent p99, ratio p50, ratio p99.
    fn rows(&self) -> Vec<[String; 7]> {
        let row = |mode: &str, f: &[f64], a: &[f64]| {
            let (f50, f99, a50, a99) = (pct(f, 50.0), pct(f, 99.0), pct(a, 50.0), pct(a, 99.0));
            [
                mode.to_string(),
                fmt(f50, 0),
                fmt(f99, 0),
                fmt(a50, 0),
                fmt(a99, 0),
                ratio(a50, f50),
                ratio(a99, f99),
            ]
        };
        vec![
            row(
                "one after another",
                &self.floor.sequential,
                &self.agent.sequential,
            ),
            row(
                "all at once",
                &self.floor.concurrent,
                &self.agent.concurrent,
            ),
        ]
    }

    fn mem_lines(&self) -> Vec<String> {
        let mut v = vec![
            format!("agent RSS with 0 pods: {:.1} MiB (VmRSS; peak since its start {:.1} MiB)", self.mem_0.rss, self.mem_0.hwm),
            format!(
                "agent RSS with {} pods: {:.1} MiB after the ones one after another, {:.1} MiB after the ones at once; peak during the agent runs {:.1} MiB (VmHWM)",
                self.pods, self.mem_seq.rss, self.mem_con.rss, self.mem_con.hwm
            ),
        ];
        if let Some(m) = self.mem_after {
            v.push(format!(
                "agent RSS after all were deleted: {:.1} MiB",
                m.rss
            ));
        }
        v
    }

    fn goal_lines(&self) -> Vec<String> {
        let seq99 = pct(&self.agent.sequential, 99.0);
        let r = |a: &[f64], f: &[f64], p: f64| Some(pct(a, p)? / pct(f, p)?);
        let worst_ratio = [
            r(&self.agent.sequential, &self.floor.sequential, 50.0),
            r(&self.agent.sequential, &self.floor.sequential, 99.0),
            r(&self.agent.concurrent, &self.floor.concurrent, 50.0),
            r(&self.agent.concurrent, &self.floor.concurrent, 99.0),
        ]
        .into_iter()
        .flatten()
        .fold(0.0_f64, f64::max);
        let rss = self.mem_seq.rss.max(self.mem_con.rss);
        vec![
            format!(
                "p99 one after another under 1 s: {} ms, {}",
                fmt(seq99, 0),
                verdict(seq99.is_some_and(|v| v < 1000.0))
            ),
            format!(
                "overhead at most 1.3x the floor: worst ratio {worst_ratio:.2}, {}",
                verdict(worst_ratio <= 1.3)
            ),
            format!(
                "RSS under 30 MiB with {} pods: {rss:.1} MiB, {}",
                self.pods,
                verdict(rss < 30.0)
            ),
        ]
    }

    fn notes(&self) -> Vec<String> {
        vec![
            format!(
                "node {}, agent {} build; {} pods per row; image {IMAGE} already imported; scheduler out of the measure (spec.nodeName set)",
                self.node, self.agent_profile, self.pods
            ),
            format!("machine: {}", self.machine),
            format!("other pods on the cluster during the run: {}", self.others),
        ]
    }

    fn text(&self) -> String {
        let mut s = format!(
            "{:<18} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}\n",
            "pods (ms)",
            "floor p50",
            "floor p99",
            "agent p50",
            "agent p99",
            "ratio p50",
            "ratio p99"
        );
        for r in self.rows() {
            s.push_str(&format!(
                "{:<18} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}\n",
                r[0], r[1], r[2], r[3], r[4], r[5], r[6]
            ));
        }
        s.push('\n');
        for l in self
            .mem_lines()
            .into_iter()
            .chain(self.goal_lines())
            .chain(self.notes())
        {
            s.push_str(&l);
            s.push('\n');
        }
        s
    }

    fn markdown(&self) -> String {
        let mut s = String::from(
            "| pods | floor p50 (ms) | floor p99 (ms) | agent p50 (ms) | agent p99 (ms) | agent / floor p50 | agent / floor p99 |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in self.rows() {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r[0], r[1], r[2], r[3], r[4], r[5], r[6]
            ));
        }
        s.push('\n');
        for l in self.mem_lines() {
            s.push_str(&format!("- {l}\n"));
        }
        s.push_str("\nGoals:\n\n");
        for l in self.goal_lines() {
            s.push_str(&format!("- {l}\n"));
        }
        s.push('\n');
        for l in self.notes() {
            s.push_str(&format!("- {l}\n"));
        }
        s
    }
}
