//! Benchmark: the operator against N Node objects (no agents behind them).
//!
//! Starts the given operator binary alone, creates N Nodes through the API and
//! prints how long until all N NodeConfigs exist, with the operator's peak RSS
//! and CPU time. Run it through `e2e/bench/operator.sh`, which stops the
//! cluster's own operator replicas first.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use nodeconfig_crds::NodeConfig;

const BENCH_LABEL: &str = "nodeconfig.dev/bench";
const PREFIX: &str = "bench-node-";

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let operator_bin = PathBuf::from(
        args.get(2)
            .context("usage: bench-operator N OPERATOR_BIN")?,
    );
    let state = nodeconfig_e2e::state_dir();

    let config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(nodeconfig_e2e::admin_kubeconfig())?,
        &Default::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let node_api: Api<Node> = Api::all(client.clone());
    let nc_api: Api<NodeConfig> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "nodeconfig-system");

    delete_bench_nodes(&node_api).await?;

    let mut operator = start_operator(&operator_bin, &state)?;
    let pid = operator.id();
    let result = async {
        // Leadership first, so the measurement is the operator's work, not the lease hand-over.
        let started = Instant::now();
        loop {
            let holder = leases.get_opt("nodeconfig-operator").await?.and_then(|l| l.spec?.holder_identity);
            if holder.as_deref() == Some("bench-operator") {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the benchmarked operator did not become leader within 60s (holder: {holder:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let idle = read_proc(pid)?;

        let seen = tokio::spawn(count_nodeconfigs(nc_api.clone(), nodes));
        let t0 = Instant::now();
        futures::stream::iter(0..nodes)
            .map(|i| {
                let api = node_api.clone();
                async move {
                    let node = Node {
                        metadata: ObjectMeta {
                            name: Some(format!("{PREFIX}{i:05}")),
                            labels: Some(
                                [
                                    (BENCH_LABEL.to_string(), "true".to_string()),
                                    // Kubelet mode, so the agent DaemonSet does not schedule 1,000 pods.
                                    ("nodeconfig.dev/agent-managed".to_string(), "true".to_string()),
                                ]
                                .into(),
                            ),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &node).await.map(|_| ())
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await?;
        let created = t0.elapsed();
        tokio::time::timeout(Duration::from_secs(300), seen).await.context("NodeConfigs did not all appear within 300s")???;
        let all = t0.elapsed();
        let done = read_proc(pid)?;
        println!("operator benchmark: {nodes} Nodes, no agents ({})", operator_bin.display());
        println!("  Nodes created through the API in        {:>8.2} s", created.as_secs_f64());
        println!("  all {nodes} NodeConfigs exist after      {:>8.2} s (from the first create)", all.as_secs_f64());
        println!("  operator peak RSS (VmHWM)               {:>8.1} MiB (idle leader before: {:.1} MiB)", done.hwm_kib as f64 / 1024.0, idle.hwm_kib as f64 / 1024.0);
        println!("  operator CPU time during the run        {:>8.2} s", done.cpu_secs - idle.cpu_secs);
        Ok(())
    }
    .await;

    let _ = operator.kill();
    let _ = operator.wait();
    delete_bench_nodes(&node_api).await?;
    result
}

fn start_operator(bin: &PathBuf, state: &std::path::Path) -> Result<Child> {
    let log = std::fs::File::create(state.join("logs/bench-operator.log"))?;
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(state.join("operator.kubeconfig"))
        .args(["--listen", "127.0.0.1:18089"])
        .env("POD_NAME", "bench-operator")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// Waits until `want` NodeConfigs of bench Nodes exist.
async fn count_nodeconfigs(api: Api<NodeConfig>, want: usize) -> Result<()> {
    let mut names = HashSet::new();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.try_next().await? {
        match event {
            watcher::Event::Apply(nc) | watcher::Event::InitApply(nc) => {
                if let Some(name) = nc.metadata.name.filter(|n| n.starts_with(PREFIX)) {
                    names.insert(name);
                }
            }
            watcher::Event::Delete(nc) => {
                if let Some(name) = nc.metadata.name {
                    names.remove(&name);
                }
            }
            _ => {}
        }
        if names.len() >= want {
            return Ok(());
        }
    }
    bail!("the NodeConfig watch ended")
}

async fn delete_bench_nodes(api: &Api<Node>) -> Result<()> {
    let selector = ListParams::default().labels(&format!("{BENCH_LABEL}=true"));
    api.delete_collection(&DeleteParams::default(), &selector)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api.list_metadata(&selector).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("bench Nodes still exist after 120s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

struct ProcSample {
    hwm_kib: u64,
    cpu_secs: f64,
}

fn read_proc(pid: u32) -> Result<ProcSample> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("the operator exited")?;
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name: utime and stime are the 12th and 13th.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    Ok(ProcSample {
        hwm_kib,
        cpu_secs: ticks / 100.0,
    })
}
