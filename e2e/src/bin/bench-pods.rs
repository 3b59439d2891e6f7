//! Benchmark: pod start-up, memory and CPU of the agent in Kubelet mode against
//! the real kubelet of the pinned version, side by side in one run, with the
//! floor of the bare CRI calls as a third column.
//!
//! Two nodes of the local cluster, each with its own containerd of the same
//! version and the same images: nc-node-1 run by the agent (`--node`) and
//! nc-kubelet-1 run by the kubelet (`--kubelet-node`). The same Pod spec on
//! both (busybox `sleep 3600`, `spec.nodeName` set so the scheduler is out of
//! the measure, a toleration of the kubelet node's taint), in namespace
//! `bench-pods`. One sample: from sending the create request until a watch on
//! the namespace shows the Pod Running with Ready=True.
//!
//! - *floor*: a bare CRI client on the agent node's containerd runs
//!   RunPodSandbox, CreateContainer and StartContainer per pod, with the
//!   sandbox and container configs the agent's own builders make for the same
//!   Pod (labels replaced by `nodeconfig.dev/bench=floor`, so the agent leaves
//!   them alone); timed from the first call until StartContainer returns.
//!
//! Phases, each with the CPU time (utime+stime) both processes spent in it and
//! their RSS at its end: idle with 0 pods (`--hold` s); N pods one after
//! another (a floor pod, then an agent Pod and a kubelet Pod, the two in turns
//! of order, so that the load of a shared machine falls on all alike); those
//! deleted; N at once (the floor's batch, the agent's, the kubelet's); idle
//! with N; `--full` − N more at once (the kubelet's batch first, then the
//! agent's); idle with `--full`; all deleted. Peak RSS is VmHWM, reset after
//! the idle 0-pod phase. Prints the tables, and writes them as Markdown to
//! `--table FILE` when given. Run it through `e2e/bench/pods.sh`.
//!
//!   bench-pods [--pods N] [--full M] [--hold SECS] [--node NAME]
//!              [--kubelet-node NAME] [--table FILE] [--trace]
//!
//! `--trace` prints each Pod's create and ready times (UTC, ms) on stderr, to
//! set beside the agent's and the kubelet's logs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Node, Pod, PodSpec, ServiceAccount, Toleration,
};
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
/// The taint of the cluster's kubelet nodes (`NC_KUBELET_TAINT` in e2e/scripts/lib/kubelet.sh).
const KUBELET_NODE_TAINT: &str = "nodeconfig.dev/kubelet-node";
/// The label the kubelet puts on a sandbox with its Pod's namespace.
const KUBELET_LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// How long one pod may take before the run fails.
const POD_TIMEOUT: Duration = Duration::from_secs(180);
/// Pause between two batches at once, so that one batch's tail of work does not
/// fall on the next.
const BETWEEN_BATCHES: Duration = Duration::from_secs(3);

const USAGE: &str = "usage: bench-pods [--pods N] [--full M] [--hold SECS] [--node NAME] [--kubelet-node NAME] [--table FILE] [--trace]";

struct Args {
    pods: usize,
    full: usize,
    hold: u64,
    node: String,
    kubelet_node: String,
    table: Option<PathBuf>,
    /// Print each Pod's create and ready times (UTC), to match with the logs.
    trace: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        pods: 30,
        full: 100,
        hold: 20,
        node: "nc-node-1".into(),
        kubelet_node: "nc-kubelet-1".into(),
        table: None,
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--pods" => args.pods = value()?.parse().context("--pods")?,
            "--full" => args.full = value()?.parse().context("--full")?,
            "--hold" => args.hold = value()?.parse().context("--hold")?,
            "--node" => args.node = value()?,
            "--kubelet-node" => args.kubelet_node = value()?,
            "--table" => args.table = Some(value()?.into()),
            "--trace" => args.trace = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    if args.pods == 0 {
        bail!("--pods must be at least 1");
    }
    if args.full < args.pods {
        bail!(
            "--full ({}) must be at least --pods ({})",
            args.full,
            args.pods
        );
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

// ---------------------------------------------------------------- the two peers

/// Which of the two node programs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    Agent,
    Kubelet,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Agent => "agent",
            Peer::Kubelet => "kubelet",
        }
    }
}

/// The process of a peer, found through the pid file the cluster scripts write.
struct Proc {
    peer: Peer,
    node: String,
    pidfile: PathBuf,
    pid: u32,
}

impl Proc {
    fn find(peer: Peer, node: &str) -> Result<Self> {
        let pidfile = match peer {
            Peer::Agent => run_dir()
                .join("nodeconfig")
                .join(format!("agent-{node}.pid")),
            Peer::Kubelet => run_dir().join("nodes").join(node).join("kubelet.pid"),
        };
        let pid = read_pid(&pidfile)?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .with_context(|| format!("the {} of {node} (pid {pid}) is not running", peer.name()))?;
        let want = match peer {
            Peer::Agent => "node-agent",
            Peer::Kubelet => "kubelet",
        };
        if comm.trim() != want {
            bail!(
                "pid {pid} of {} is {:?}, not the {want}",
                pidfile.display(),
                comm.trim()
            );
        }
        Ok(Self {
            peer,
            node: node.to_string(),
            pidfile,
            pid,
        })
    }

    /// Fails when the node's program is no longer the process measured
    /// (something restarted it: the figures would mix two processes).
    fn same(&self) -> Result<()> {
        let (name, node, pid) = (self.peer.name(), &self.node, self.pid);
        match read_pid(&self.pidfile) {
            Ok(now) if now == pid && std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                Ok(())
            }
            Ok(now) => bail!("the {name} of {node} was restarted during the run (pid {pid}, now {now}); figures discarded"),
            Err(e) => Err(e.context(format!("the {name} of {node} (pid {pid}) is gone; figures discarded"))),
        }
    }

    fn mem(&self) -> Result<Mem> {
        self.same()?;
        read_mem(self.pid)
    }

    fn cpu(&self, ticks_per_s: f64) -> Result<Cpu> {
        self.same()?;
        read_cpu(self.pid, ticks_per_s)
    }

    /// Peak RSS (VmHWM) counts from now on.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
    }

    /// The build of the agent (release or debug), or the kubelet's binary.
    fn build(&self) -> String {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self.peer {
            Peer::Agent if exe.contains("/release/") => "release build".into(),
            Peer::Agent if exe.contains("/debug/") => "debug build".into(),
            _ => exe,
        }
    }
}

fn read_pid(file: &std::path::Path) -> Result<u32> {
    std::fs::read_to_string(file)
        .with_context(|| format!("read {} (is the cluster up?)", file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("pid in {}", file.display()))
}

/// A process's memory at one moment, in MiB.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss: f64,
    hwm: f64,
}

/// A process's CPU time so far, in seconds: its own (utime+stime) and that of
/// its children it waited for (cutime+cstime).
#[derive(Clone, Copy, Default)]
struct Cpu {
    own: f64,
    children: f64,
}

fn read_mem(pid: u32) -> Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("pid {pid} exited"))?;
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

fn read_cpu(pid: u32, ticks_per_s: f64) -> Result<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("pid {pid} exited"))?;
    parse_stat_cpu(&stat, ticks_per_s).with_context(|| format!("/proc/{pid}/stat: {stat:?}"))
}

/// utime, stime, cutime and cstime (fields 14 to 17 of `/proc/PID/stat`),
/// counted after the command name, which may hold spaces and parentheses.
fn parse_stat_cpu(stat: &str, ticks_per_s: f64) -> Option<Cpu> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() == 4).then(|| Cpu {
        own: (f[0] + f[1]) / ticks_per_s,
        children: (f[2] + f[3]) / ticks_per_s,
    })
}

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Both peers' memory and CPU at one moment.
#[derive(Clone, Copy)]
struct Snap {
    at: Instant,
    mem: [Mem; 2],
    cpu: [Cpu; 2],
}

/// The two processes, agent first.
struct Peers {
    procs: [Proc; 2],
    ticks: f64,
}

impl Peers {
    fn snap(&self) -> Result<Snap> {
        let [a, k] = &self.procs;
        Ok(Snap {
            at: Instant::now(),
            mem: [a.mem()?, k.mem()?],
            cpu: [a.cpu(self.ticks)?, k.cpu(self.ticks)?],
        })
    }
}

/// One phase of the run: both peers' CPU over it and their RSS at its end.
struct Phase {
    name: String,
    pods_after: usize,
    start: Snap,
    end: Snap,
}

impl Phase {
    fn new(name: impl Into<String>, pods_after: usize, start: Snap, end: Snap) -> Self {
        let p = Self {
            name: name.into(),
            pods_after,
            start,
            end,
        };
        eprintln!(
            "   [{}: {:.1} s; CPU agent {:.2} s, kubelet {:.2} s; RSS agent {:.1} MiB, kubelet {:.1} MiB]",
            p.name,
            p.secs(),
            p.cpu(0),
            p.cpu(1),
            p.end.mem[0].rss,
            p.end.mem[1].rss
        );
        p
    }

    fn secs(&self) -> f64 {
        self.end.at.duration_since(self.start.at).as_secs_f64()
    }

    fn cpu(&self, i: usize) -> f64 {
        self.end.cpu[i].own - self.start.cpu[i].own
    }
}

// ---------------------------------------------------------------- the run

/// Start-up samples (ms) of one row.
#[derive(Default)]
struct Startup {
    floor: Vec<f64>,
    agent: Vec<f64>,
    kubelet: Vec<f64>,
}

impl Startup {
    fn of(&mut self, peer: Peer) -> &mut Vec<f64> {
        match peer {
            Peer::Agent => &mut self.agent,
            Peer::Kubelet => &mut self.kubelet,
        }
    }
}

/// What [`measure`] found.
struct Measured {
    seq: Startup,
    con: Startup,
    more: Startup,
    phases: Vec<Phase>,
    /// Peak RSS of each peer from the end of the idle 0-pod phase to the end of the full one.
    peak: [Mem; 2],
    /// Memory once all Pods are deleted.
    after: [Mem; 2],
    /// CPU of reaped children over the whole run.
    children: [f64; 2],
}

struct Report {
    args_pods: usize,
    args_full: usize,
    hold: u64,
    node: String,
    kubelet_node: String,
    agent_build: String,
    kubelet_build: String,
    m: Measured,
    machine: String,
    others: String,
}

/// The run's context: the API, the two nodes' runtimes and the floor.
struct Ctx<'a> {
    args: &'a Args,
    pods: Api<Pod>,
    readiness: Readiness,
    agent_cri: CriClient,
    kubelet_cri: CriClient,
    floor: Floor,
    peers: Peers,
}

impl Ctx<'_> {
    fn node(&self, peer: Peer) -> &str {
        match peer {
            Peer::Agent => &self.args.node,
            Peer::Kubelet => &self.args.kubelet_node,
        }
    }

    async fn start(&self, peer: Peer, name: String) -> Result<f64> {
        start_pod(
            &self.pods,
            &self.readiness,
            name,
            self.node(peer),
            self.args.trace,
        )
        .await
    }

    /// `n` Pods of `peer` created at once; their start-up times.
    async fn batch(
        &self,
        peer: Peer,
        prefix: &str,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<f64>> {
        let tag = &peer.name()[..1];
        let started = futures::future::join_all(
            range.map(|i| self.start(peer, format!("b{tag}-{prefix}-{i:03}"))),
        )
        .await;
        let v = started.into_iter().collect::<Result<Vec<_>>>()?;
        eprintln!("   {}: {}", peer.name(), summary(&v));
        Ok(v)
    }

    async fn delete_all(&self) -> Result<()> {
        delete_pods(
            &self.pods,
            &[
                (&self.agent_cri, LABEL_POD_NAMESPACE),
                (&self.kubelet_cri, KUBELET_LABEL_POD_NAMESPACE),
            ],
        )
        .await
    }
}

async fn bench(args: Args) -> Result<()> {
    let peers = Peers {
        procs: [
            Proc::find(Peer::Agent, &args.node)?,
            Proc::find(Peer::Kubelet, &args.kubelet_node)?,
        ],
        ticks: clock_ticks(),
    };
    let (agent_build, kubelet_build) = (peers.procs[0].build(), peers.procs[1].build());
    eprintln!(
        "agent of {}: pid {} ({agent_build}); kubelet of {}: pid {} ({kubelet_build})",
        args.node, peers.procs[0].pid, args.kubelet_node, peers.procs[1].pid
    );
    let load_before = load_average();

    let config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(nodeconfig_e2e::admin_kubeconfig())?,
        &Default::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    for node in [&args.node, &args.kubelet_node] {
        check_node(&client, node, args.full).await?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let agent_cri = CriClient::connect(&cri_endpoint(&args.node)).await?;
    let kubelet_cri = CriClient::connect(&cri_endpoint(&args.kubelet_node)).await?;
    let floor = Floor::new(&args.node, agent_cri.clone());

    // What a killed earlier run left behind.
    floor.cleanup().await?;
    ensure_namespace(&client).await?;
    let readiness = Readiness::start(pods.clone()).await?;
    let ctx = Ctx {
        args: &args,
        pods,
        readiness,
        agent_cri,
        kubelet_cri,
        floor,
        peers,
    };
    ctx.delete_all().await?;

    let others = other_pods(&client)
        .await
        .unwrap_or_else(|e| format!("unknown ({e})"));
    eprintln!("other pods on the cluster: {others}");

    let measured = measure(&ctx).await;
    if measured.is_err() {
        // Leave the nodes as they were found.
        let _ = ctx.floor.cleanup().await;
        let _ = ctx.delete_all().await;
    }
    let m = measured?;
    let Ctx { readiness, .. } = ctx;
    readiness.stop();

    let load_after = load_average();
    let report = Report {
        args_pods: args.pods,
        args_full: args.full,
        hold: args.hold,
        node: args.node.clone(),
        kubelet_node: args.kubelet_node.clone(),
        agent_build,
        kubelet_build,
        m,
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

/// The node is Ready and takes at least `pods` pods (its allocatable: the
/// agent's NodeConfig spec.pods.maxPods, the kubelet's maxPods).
async fn check_node(client: &Client, name: &str, pods: usize) -> Result<()> {
    let node = Api::<Node>::all(client.clone())
        .get(name)
        .await
        .with_context(|| {
            format!("node {name} (is it up? a kubelet node needs NODECONFIG_KUBELET_NODES=1)")
        })?;
    let status = node.status.unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        bail!("node {name} is not Ready");
    }
    let allocatable: usize = status
        .allocatable
        .as_ref()
        .and_then(|a| a.get("pods"))
        .and_then(|q| q.0.parse().ok())
        .unwrap_or(0);
    if allocatable < pods + 5 {
        bail!("node {name} takes {allocatable} pods; the run needs {pods} and those already there (raise maxPods)");
    }
    Ok(())
}

/// The phases of the run (see the module's doc).
async fn measure(ctx: &Ctx<'_>) -> Result<Measured> {
    let (n, full, hold) = (
        ctx.args.pods,
        ctx.args.full,
        Duration::from_secs(ctx.args.hold),
    );
    let (mut seq, mut con, mut more) = (Startup::default(), Startup::default(), Startup::default());
    let mut phases = Vec::new();
    let run_start = ctx.peers.snap()?;

    // 0. Idle, no bench pods.
    eprintln!("== idle with 0 pods for {} s", hold.as_secs());
    let s = ctx.peers.snap()?;
    tokio::time::sleep(hold).await;
    let e = ctx.peers.snap()?;
    phases.push(Phase::new("idle, 0 pods", 0, s, e));
    for p in &ctx.peers.procs {
        p.reset_peak();
    }

    // 1. One after another: a floor pod, then the agent's and the kubelet's
    // Pods in turns of order.
    eprintln!("== {n} pods one after another: floor, then agent and kubelet in turns of order");
    let s = ctx.peers.snap()?;
    let mut sandbox_ms = Vec::new();
    for i in 0..n {
        let (ms, sandbox) = ctx.floor.start_one(&format!("fs-{i:03}")).await?;
        seq.floor.push(ms);
        sandbox_ms.push(sandbox);
        let order = if i % 2 == 0 {
            [Peer::Agent, Peer::Kubelet]
        } else {
            [Peer::Kubelet, Peer::Agent]
        };
        for peer in order {
            let tag = &peer.name()[..1];
            let ms = ctx.start(peer, format!("b{tag}-seq-{i:03}")).await?;
            seq.of(peer).push(ms);
        }
    }
    let e = ctx.peers.snap()?;
    eprintln!(
        "   floor: {}; of which RunPodSandbox {}",
        summary(&seq.floor),
        summary(&sandbox_ms)
    );
    eprintln!("   agent: {}", summary(&seq.agent));
    eprintln!("   kubelet: {}", summary(&seq.kubelet));
    phases.push(Phase::new(
        format!("{n} started one after another"),
        n,
        s,
        e,
    ));
    ctx.floor.cleanup().await?;
    let s = ctx.peers.snap()?;
    ctx.delete_all().await?;
    let e = ctx.peers.snap()?;
    phases.push(Phase::new(format!("{n} deleted"), 0, s, e));

    // 2. At once: the floor's batch, the agent's, the kubelet's.
    eprintln!("== {n} pods at once: floor, agent, kubelet");
    let started =
        futures::future::join_all((0..n).map(|i| ctx.floor.start_one_named(format!("fc-{i:03}"))))
            .await;
    let mut sandbox_ms = Vec::new();
    for r in started {
        let (ms, sandbox) = r?;
        con.floor.push(ms);
        sandbox_ms.push(sandbox);
    }
    eprintln!(
        "   floor: {}; of which RunPodSandbox {}",
        summary(&con.floor),
        summary(&sandbox_ms)
    );
    ctx.floor.cleanup().await?;
    tokio::time::sleep(BETWEEN_BATCHES).await;
    let s = ctx.peers.snap()?;
    con.agent = ctx.batch(Peer::Agent, "con", 0..n).await?;
    tokio::time::sleep(BETWEEN_BATCHES).await;
    con.kubelet = ctx.batch(Peer::Kubelet, "con", 0..n).await?;
    let e = ctx.peers.snap()?;
    phases.push(Phase::new(format!("{n} started at once"), n, s, e));
    tokio::time::sleep(hold).await;
    let h = ctx.peers.snap()?;
    phases.push(Phase::new(format!("idle, {n} pods"), n, e, h));

    // 3. Up to `full`: the rest at once, the kubelet's batch first this time.
    let mut last = h;
    if full > n {
        eprintln!("== {} more pods at once: kubelet, agent", full - n);
        more.kubelet = ctx.batch(Peer::Kubelet, "more", n..full).await?;
        tokio::time::sleep(BETWEEN_BATCHES).await;
        more.agent = ctx.batch(Peer::Agent, "more", n..full).await?;
        let e = ctx.peers.snap()?;
        phases.push(Phase::new(
            format!("{} more started at once", full - n),
            full,
            h,
            e,
        ));
        tokio::time::sleep(hold).await;
        last = ctx.peers.snap()?;
        phases.push(Phase::new(format!("idle, {full} pods"), full, e, last));
    }
    let peak = last.mem;

    // 4. All deleted.
    let s = ctx.peers.snap()?;
    ctx.delete_all().await?;
    let e = ctx.peers.snap()?;
    phases.push(Phase::new(format!("{full} deleted"), 0, s, e));
    // Both let go of what they held for the pods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ctx.peers.snap()?;
    Ok(Measured {
        seq,
        con,
        more,
        phases,
        peak: [peak[0], peak[1]],
        after: after.mem,
        children: [
            after.cpu[0].children - run_start.cpu[0].children,
            after.cpu[1].children - run_start.cpu[1].children,
        ],
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

// ---------------------------------------------------------------- the Pods

/// The bench Pod: busybox `sleep 3600` on `node`, no probes (Ready = running),
/// tolerating the kubelet node's taint (on both nodes: the same spec).
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
            tolerations: Some(vec![Toleration {
                key: Some(KUBELET_NODE_TAINT.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]),
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
            anyhow!("pod {name} on {node} not Running and Ready after {POD_TIMEOUT:?}; see the node's log")
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
    // Nor do the Pods' token volumes mount before the controller-manager
    // published the cluster's CA there.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    while cms.get_opt("kube-root-ca.crt").await?.is_none() {
        if Instant::now() > deadline {
            bail!("no ConfigMap kube-root-ca.crt in namespace {NS} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Deletes the bench Pods, waits until they are gone from the API server and
/// no sandbox of theirs is ready in the nodes' runtimes (each runtime given
/// with the sandbox label its node program writes the Pod's namespace in). The
/// kubelet removes a stopped sandbox only at its next container GC (every
/// minute), so stopped sandboxes are not waited for, on either node.
async fn delete_pods(pods: &Api<Pod>, runtimes: &[(&CriClient, &str)]) -> Result<()> {
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
    let mut left = 0;
    for (cri, label) in runtimes {
        let mut rt = cri.runtime.clone();
        let filter = cri::PodSandboxFilter {
            label_selector: [(label.to_string(), NS.to_string())].into(),
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        left += loop {
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
    }
    eprintln!(
        "   {n} Pods deleted: gone from the API server after {gone_api:.1} s, {}",
        if left == 0 {
            format!(
                "no sandbox of theirs ready after {:.1} s",
                t0.elapsed().as_secs_f64()
            )
        } else {
            format!(
                "{left} sandboxes still ready after {:.0} s",
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
        let phase = p
            .status
            .and_then(|s| s.phase)
            .unwrap_or_else(|| "no phase".into());
        *counts
            .entry(format!("{ns} on {node} ({phase})"))
            .or_default() += 1;
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

fn quotient(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    fmt(quotient(a, b), 2)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// A table: header and rows, printed as text or Markdown. The first column is
/// left-aligned, the others right-aligned.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn text(&self) -> String {
        let cols = self.header.len();
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |r: &[String]| {
            let mut s = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c == 0 {
                    s.push_str(&format!("{cell:<w$}", w = width[c]));
                } else {
                    s.push_str(&format!("  {cell:>w$}", w = width[c]));
                }
            }
            s.push('\n');
            s
        };
        let mut s = line(&self.header);
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }

    fn markdown(&self) -> String {
        let mut s = format!("| {} |\n|---|", self.header.join(" | "));
        s.push_str(&"---:|".repeat(self.header.len() - 1));
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        s
    }
}

impl Report {
    fn startup_rows(&self) -> Vec<(String, &Startup)> {
        let m = &self.m;
        let mut v = vec![
            (format!("{} one after another", self.args_pods), &m.seq),
            (format!("{} at once", self.args_pods), &m.con),
        ];
        if !m.more.agent.is_empty() {
            v.push((
                format!(
                    "{} more at once ({} → {})",
                    self.args_full - self.args_pods,
                    self.args_pods,
                    self.args_full
                ),
                &m.more,
            ));
        }
        v
    }

    fn startup_table(&self) -> Table {
        let header = [
            "pods (ms)",
            "floor p50",
            "floor p99",
            "agent p50",
            "agent p99",
            "kubelet p50",
            "kubelet p99",
            "agent / kubelet p50",
            "agent / kubelet p99",
        ];
        let rows = self
            .startup_rows()
            .into_iter()
            .map(|(name, s)| {
                let (f50, f99) = (pct(&s.floor, 50.0), pct(&s.floor, 99.0));
                let (a50, a99) = (pct(&s.agent, 50.0), pct(&s.agent, 99.0));
                let (k50, k99) = (pct(&s.kubelet, 50.0), pct(&s.kubelet, 99.0));
                vec![
                    name,
                    fmt(f50, 0),
                    fmt(f99, 0),
                    fmt(a50, 0),
                    fmt(a99, 0),
                    fmt(k50, 0),
                    fmt(k99, 0),
                    ratio(a50, k50),
                    ratio(a99, k99),
                ]
            })
            .collect();
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows,
        }
    }

    fn resource_table(&self) -> Table {
        let header = [
            "phase",
            "s",
            "pods at its end",
            "agent RSS (MiB)",
            "kubelet RSS (MiB)",
            "RSS agent / kubelet",
            "agent CPU (s)",
            "kubelet CPU (s)",
            "CPU agent / kubelet",
        ];
        let mut rows: Vec<Vec<String>> = self
            .m
            .phases
            .iter()
            .map(|p| {
                let (ar, kr) = (p.end.mem[0].rss, p.end.mem[1].rss);
                let (ac, kc) = (p.cpu(0), p.cpu(1));
                vec![
                    p.name.clone(),
                    format!("{:.0}", p.secs()),
                    p.pods_after.to_string(),
                    format!("{ar:.1}"),
                    format!("{kr:.1}"),
                    ratio(Some(ar), Some(kr)),
                    format!("{ac:.2}"),
                    format!("{kc:.2}"),
                    ratio(Some(ac), Some(kc)),
                ]
            })
            .collect();
        let [ap, kp] = self.m.peak;
        rows.push(vec![
            "peak (VmHWM) from 0 to full".into(),
            "".into(),
            "".into(),
            format!("{:.1}", ap.hwm),
            format!("{:.1}", kp.hwm),
            ratio(Some(ap.hwm), Some(kp.hwm)),
            "".into(),
            "".into(),
            "".into(),
        ]);
        let [aa, ka] = self.m.after;
        rows.push(vec![
            "3 s after all were deleted".into(),
            "".into(),
            "0".into(),
            format!("{:.1}", aa.rss),
            format!("{:.1}", ka.rss),
            ratio(Some(aa.rss), Some(ka.rss)),
            "".into(),
            "".into(),
            "".into(),
        ]);
        let total = |i: usize| self.m.phases.iter().map(|p| p.cpu(i)).sum::<f64>();
        rows.push(vec![
            "all phases".into(),
            format!("{:.0}", self.m.phases.iter().map(Phase::secs).sum::<f64>()),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            format!("{:.2}", total(0)),
            format!("{:.2}", total(1)),
            ratio(Some(total(0)), Some(total(1))),
        ]);
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows,
        }
    }

    fn goal_lines(&self) -> Vec<String> {
        let m = &self.m;
        let p99 = |s: &Startup| quotient(pct(&s.agent, 99.0), pct(&s.kubelet, 99.0));
        let (seq, con) = (p99(&m.seq), p99(&m.con));
        let start_ok = [seq, con].iter().all(|r| r.is_some_and(|r| r <= 0.8));
        let mut lines = vec![format!(
            "p99 start-up at most 0.8x the kubelet's ({} one after another and {} at once): {} and {}, {}",
            self.args_pods,
            self.args_pods,
            fmt(seq, 3),
            fmt(con, 3),
            verdict(start_ok)
        )];
        if !m.more.agent.is_empty() {
            lines.push(format!(
                "  (not a goal: the {} more at once, p99 ratio {})",
                self.args_full - self.args_pods,
                fmt(p99(&m.more), 3)
            ));
        }
        // RSS at every size: each RSS reading taken with 0, N or `full` pods
        // running (the ends of the idle phases and of the start-up phases).
        let mut by_size: BTreeMap<usize, f64> = BTreeMap::new();
        for p in &m.phases {
            if p.name.contains("deleted") {
                continue;
            }
            let r = p.end.mem[0].rss / p.end.mem[1].rss;
            let e = by_size.entry(p.pods_after).or_insert(0.0);
            *e = e.max(r);
        }
        let rss_ok = by_size.values().all(|&r| r <= 0.25);
        lines.push(format!(
            "RSS at most 0.25x the kubelet's at every size (worst ratio at each): {}, {}",
            by_size
                .iter()
                .map(|(n, r)| format!("{n} pods {r:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            verdict(rss_ok)
        ));
        let [ap, kp] = m.peak;
        lines.push(format!(
            "  (peak RSS, VmHWM: {:.1} vs {:.1} MiB, ratio {})",
            ap.hwm,
            kp.hwm,
            ratio(Some(ap.hwm), Some(kp.hwm))
        ));
        lines
    }

    fn notes(&self) -> Vec<String> {
        vec![
            format!(
                "agent: {}, {}; kubelet: {}, {}; {} pods per start-up row, {} at the largest size; idle phases {} s",
                self.node, self.agent_build, self.kubelet_node, self.kubelet_build, self.args_pods, self.args_full, self.hold
            ),
            format!("image {IMAGE} already in both nodes' containerd; scheduler out of the measure (spec.nodeName set)"),
            format!(
                "CPU of reaped child processes (cutime+cstime, not in the table) over the run: agent {:.2} s, kubelet {:.2} s",
                self.m.children[0], self.m.children[1]
            ),
            format!("machine: {}", self.machine),
            format!("other pods on the cluster during the run: {}", self.others),
        ]
    }

    fn text(&self) -> String {
        let mut s = self.startup_table().text();
        s.push('\n');
        s.push_str(&self.resource_table().text());
        s.push('\n');
        for l in self.goal_lines().into_iter().chain(self.notes()) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    }

    fn markdown(&self) -> String {
        let mut s =
            String::from("Pod start-up, Pod created → Running and Ready seen by a watch:\n\n");
        s.push_str(&self.startup_table().markdown());
        s.push_str("\nMemory and CPU of the two processes, by phase (RSS at the phase's end, CPU time spent in it):\n\n");
        s.push_str(&self.resource_table().markdown());
        s.push_str("\nGoals (issue 13):\n\n");
        for l in self.goal_lines() {
            match l.strip_prefix("  ") {
                Some(sub) => s.push_str(&format!("  - {sub}\n")),
                None => s.push_str(&format!("- {l}\n")),
            }
        }
        s.push('\n');
        for l in self.notes() {
            s.push_str(&format!("- {l}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        let stat =
            "42 (kube let) (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 12 0 100 0 0";
        let cpu = parse_stat_cpu(stat, 100.0).unwrap();
        assert_eq!(cpu.own, 3.0);
        assert_eq!(cpu.children, 0.1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(pct(&v, 50.0), Some(15.0));
        assert_eq!(pct(&v, 99.0), Some(30.0));
    }
}
