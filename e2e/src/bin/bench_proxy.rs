//! Benchmark: the agent's service proxy against kube-proxy (iptables mode), side
//! by side on the same API server and the same iptables backend.
//!
//! The agent runs in one node namespace, kube-proxy in another; both watch the
//! same Services. For each size N this creates N ClusterIP Services (no
//! selector) in namespace `bench-proxy`, each with an EndpointSlice of two real
//! backends (busybox httpd on nc-node-2's bridge), and measures for both proxies:
//! the time until all N dispatch rules are in place, the latency of single
//! changes (a new Service + slice until a client in the node gets an HTTP
//! answer through the ClusterIP), the TCP connect time to ClusterIPs, and the
//! proxy process's peak RSS and CPU time. Run it through `e2e/bench/proxy.sh`.
//!
//! `bench-proxy probe IP` and `bench-proxy connects IP N` are the clients; the
//! benchmark runs them inside a node namespace through nsenter.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, Config};
use nodeconfig_e2e::backends::{Backend, BACKEND_PORT};

const NS: &str = "bench-proxy";
const LABEL: &str = "nodeconfig.dev/bench-proxy";

struct Proxy {
    name: &'static str,
    netns: String,
    pid: u32,
    /// Jump target prefix of a service port's dispatch rule.
    svc_jump: &'static str,
    /// Where its Prometheus metrics are served (the addresses `e2e/bench/proxy.sh` starts them on).
    metrics: &'static str,
}

/// Ends the name of both proxies' "last successful sync" gauge
/// (`kubeproxy_sync_proxy_rules_last_timestamp_seconds`, `nodeconfig_agent_...`).
const LAST_SYNC_METRIC: &str = "sync_proxy_rules_last_timestamp_seconds";

#[derive(Default, Clone)]
struct Figures {
    programmed_s: Option<f64>,
    /// When the last object was created (the same for both proxies).
    created_s: Option<f64>,
    change_p50_ms: Option<f64>,
    change_p99_ms: Option<f64>,
    change_n: usize,
    change_failed: usize,
    connect_last_ms: Option<f64>,
    connect_first_ms: Option<f64>,
    hwm_mib: f64,
    cpu_s: f64,
    /// Cold start: process start until the rules of every Service were in place.
    cold_start_s: Option<f64>,
    cold_hwm_mib: Option<f64>,
    cold_cpu_s: Option<f64>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("probe") => return probe(&args[2]),
        Some("connects") => return connects(&args[2], args[3].parse()?),
        _ => {}
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

// ---------------------------------------------------------------- clients (run inside a node namespace)

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// GETs http://IP/ until an HTTP 200 comes back (60 s at most); prints the
/// wall-clock time (unix ns) of the answer.
fn probe(ip: &str) -> Result<()> {
    let addr: SocketAddr = format!("{ip}:80").parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    println!("ready");
    std::io::stdout().flush()?;
    while Instant::now() < deadline {
        // A short connect timeout: without a rule yet, the SYN goes to the host,
        // whose ICMP unreachable answers are rate-limited, so most attempts get no
        // answer at all. Through a rule the backend answers in well under 1 ms.
        let tried = Instant::now();
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(15)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
            if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    if buf[..n].starts_with(b"HTTP/1.") && buf[..n].windows(3).any(|w| w == b"200")
                    {
                        println!("{}", unix_ns());
                        return Ok(());
                    }
                }
            }
        }
        if tried.elapsed() < Duration::from_millis(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    bail!("no answer from {ip} within 60s")
}

/// N new TCP connections to IP:80 one after another; prints each connect time in µs.
fn connects(ip: &str, n: usize) -> Result<()> {
    let addr: SocketAddr = format!("{ip}:80").parse()?;
    for _ in 0..n {
        let t = Instant::now();
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => {
                println!("{}", t.elapsed().as_micros());
                drop(s);
            }
            Err(_) => println!("failed"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the benchmark

fn ip_of(i: usize) -> String {
    // Bulk Services from 10.96.16.0 up; change Services from 10.96.200.0 up.
    let n = 16 * 256 + i;
    format!("10.96.{}.{}", n / 256, n % 256)
}

fn change_ip(i: usize) -> String {
    let n = 200 * 256 + i;
    format!("10.96.{}.{}", n / 256, n % 256)
}

async fn bench(args: Vec<String>) -> Result<()> {
    // bench-proxy run AGENT_NETNS AGENT_PID KP_NETNS KP_PID CHANGES SIZES...
    if args.len() < 8 || args[1] != "run" {
        bail!("usage: bench-proxy run AGENT_NETNS AGENT_PID KUBE_PROXY_NETNS KUBE_PROXY_PID CHANGES SIZE...");
    }
    let mut proxies = [
        Proxy {
            name: "agent",
            netns: args[2].clone(),
            pid: args[3].parse()?,
            svc_jump: "-j NC-SVC-",
            metrics: "10.200.1.2:10356",
        },
        Proxy {
            name: "kube-proxy",
            netns: args[4].clone(),
            pid: args[5].parse()?,
            svc_jump: "-j KUBE-SVC-",
            metrics: "10.200.3.2:10249",
        },
    ];
    let changes: usize = args[6].parse()?;
    let sizes: Vec<usize> = args[7..]
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;

    let config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(nodeconfig_e2e::admin_kubeconfig())?,
        &Default::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
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
    // Backends and objects that a killed earlier run left behind.
    tokio::task::spawn_blocking(nodeconfig_e2e::backends::prepare).await?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    cleanup(&svcs, &slices, &proxies).await?;

    // Two real backends, both on nc-node-2's bridge: the same distance (through
    // the host) from both proxies' nodes.
    let backends = tokio::task::spawn_blocking(|| {
        vec![Backend::start(2, "bench-a"), Backend::start(2, "bench-b")]
    })
    .await?;
    let ips: Vec<String> = backends.iter().map(|b| b.ip.to_string()).collect();
    eprintln!("backends: {ips:?}");

    let mut rows: Vec<(usize, Vec<Figures>)> = Vec::new();
    let result: Result<()> = async {
        for &n in &sizes {
            eprintln!("== {n} Services");
            let figs = one_size(n, changes, &svcs, &slices, &mut proxies, &ips).await?;
            rows.push((n, figs));
            print_table(&rows, changes);
            if let Ok(path) = std::env::var("BENCH_PROXY_TABLE") {
                std::fs::write(path, table_markdown(&rows, changes))?;
            }
            cleanup(&svcs, &slices, &proxies).await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = cleanup(&svcs, &slices, &proxies).await;
    }
    tokio::task::spawn_blocking(move || drop(backends)).await?;
    print_table(&rows, changes);
    if let Ok(path) = std::env::var("BENCH_PROXY_TABLE") {
        std::fs::write(path, table_markdown(&rows, changes))?;
    }
    result
}

async fn one_size(
    n: usize,
    changes: usize,
    svcs: &Api<Service>,
    slices: &Api<EndpointSlice>,
    proxies: &mut [Proxy; 2],
    ips: &[String],
) -> Result<Vec<Figures>> {
    let mut figs = vec![Figures::default(), Figures::default()];
    let before: Vec<(f64, f64)> = proxies
        .iter()
        .map(|p| {
            // Reset the peak RSS so VmHWM is this size's peak.
            let _ = std::fs::write(format!("/proc/{}/clear_refs", p.pid), "5");
            read_proc(p.pid).map(|s| (s.0, s.1))
        })
        .collect::<Result<_>>()?;

    // 1. Full programming: create N Services + slices; poll both proxies' rule counts.
    let t0 = Instant::now();
    let pollers: Vec<_> = proxies
        .iter()
        .map(|p| {
            let (netns, jump) = (p.netns.clone(), p.svc_jump);
            tokio::spawn(async move {
                loop {
                    let c = count_rules(&netns, jump).await?;
                    if c >= n {
                        return anyhow::Ok(t0.elapsed().as_secs_f64());
                    }
                    if t0.elapsed() > Duration::from_secs(900) {
                        bail!("{netns}: only {c} of {n} dispatch rules after 900s");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
        .collect();
    futures::stream::iter(0..n)
        .map(|i| create_one(svcs, slices, format!("bp-{i:05}"), ip_of(i), ips))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    let created = t0.elapsed().as_secs_f64();
    eprintln!("  {n} Services + EndpointSlices created in {created:.1}s");
    figs[0].created_s = Some(created);
    figs[1].created_s = Some(created);
    for (k, p) in pollers.into_iter().enumerate() {
        let s = p.await??;
        eprintln!(
            "  {}: all {n} dispatch rules after {s:.1}s",
            proxies[k].name
        );
        figs[k].programmed_s = Some(s);
    }

    // 2. Connect times to the first and the last created Service (sequential, one proxy at a time).
    for (k, p) in proxies.iter().enumerate() {
        figs[k].connect_first_ms = connect_median(&p.netns, &ip_of(0)).await?;
        figs[k].connect_last_ms = connect_median(&p.netns, &ip_of(n - 1)).await?;
    }

    // 3. Change latency: one new Service + slice at a time, both proxies probed at once.
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    for c in 0..changes {
        let ip = change_ip(c);
        let mut probes = Vec::new();
        for p in proxies.iter() {
            let mut child = tokio::process::Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{}", p.netns))
                .arg("--")
                .arg(std::env::current_exe()?)
                .args(["probe", &ip])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            // Wait for "ready", so the probe's start is not part of the latency.
            let mut out = child.stdout.take().context("probe stdout")?;
            let mut buf = [0u8; 6];
            tokio::io::AsyncReadExt::read_exact(&mut out, &mut buf).await?;
            probes.push((child, out));
        }
        let start = unix_ns();
        create_one(svcs, slices, format!("bp-chg-{c:03}"), ip.clone(), ips).await?;
        for (k, (mut child, mut out)) in probes.into_iter().enumerate() {
            let mut s = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut out, &mut s).await?;
            let _ = child.wait().await;
            match s.trim().parse::<u128>() {
                Ok(t) => lat[k].push((t.saturating_sub(start)) as f64 / 1e6),
                Err(_) => figs[k].change_failed += 1,
            }
        }
        if c % 10 == 9 {
            eprintln!(
                "  {} changes: agent p50 {:?} ms, kube-proxy p50 {:?} ms",
                c + 1,
                pct(&lat[0], 50.0).map(|v| v.round()),
                pct(&lat[1], 50.0).map(|v| v.round())
            );
        }
    }
    for k in 0..2 {
        figs[k].change_n = lat[k].len();
        figs[k].change_p50_ms = pct(&lat[k], 50.0);
        figs[k].change_p99_ms = pct(&lat[k], 99.0);
        let (hwm, cpu) = read_proc(proxies[k].pid)?;
        figs[k].hwm_mib = hwm;
        figs[k].cpu_s = cpu - before[k].1;
    }

    // 4. Cold start with every Service in place: one proxy at a time is
    // stopped, its rules removed, and started again (through the script's
    // hook); timed from the process's start until its first sync has put the
    // rules of all of them in place.
    if let Ok(script) = std::env::var("BENCH_PROXY_RESTART") {
        let total = n + changes;
        for (k, p) in proxies.iter_mut().enumerate() {
            restart_hook(&script, "stop", p.name).await?;
            p.pid = restart_hook(&script, "start", p.name)
                .await?
                .trim()
                .parse()
                .context("the start hook prints the new pid")?;
            let started = process_start_unix(p.pid)?;
            let synced = first_sync_after(p, started).await?;
            let c = count_rules(&p.netns, p.svc_jump).await?;
            let done = if c >= total {
                synced
            } else {
                // The first sync had not all of them: poll as for full programming.
                loop {
                    let c = count_rules(&p.netns, p.svc_jump).await?;
                    if c >= total {
                        break unix_s();
                    }
                    if unix_s() - started > 900.0 {
                        bail!(
                            "{}: only {c} of {total} dispatch rules 900s after a cold start",
                            p.name
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            let (hwm, cpu) = read_proc(p.pid)?;
            figs[k].cold_start_s = Some(done - started);
            figs[k].cold_hwm_mib = Some(hwm);
            figs[k].cold_cpu_s = Some(cpu);
            eprintln!(
                "  {}: cold start, all {total} Services' rules {:.1}s after the process started",
                p.name,
                done - started
            );
        }
    }
    Ok(figs)
}

fn unix_s() -> f64 {
    unix_ns() as f64 / 1e9
}

/// Runs `SCRIPT --restart ACTION PROXY`; returns what it printed.
async fn restart_hook(script: &str, action: &str, proxy: &str) -> Result<String> {
    let out = tokio::process::Command::new(script)
        .args(["--restart", action, proxy])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await?;
    if !out.status.success() {
        bail!("{script} --restart {action} {proxy}: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// When a process started, in unix seconds (to the clock tick).
fn process_start_unix(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid}"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    // Field 22 (starttime, ticks since boot) is the 20th after the command.
    let ticks: f64 = after
        .split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .context("no starttime")?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("no uptime")?;
    Ok(unix_s() - (uptime - ticks / 100.0))
}

/// Waits (15 minutes at most) until the proxy's last-sync gauge is past
/// `after` (unix s) and returns it.
async fn first_sync_after(p: &Proxy, after: f64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Ok(Some(t)) = last_sync(p.metrics).await {
            if t >= after {
                return Ok(t);
            }
        }
        if Instant::now() > deadline {
            bail!("{}: no sync within 900s of a cold start", p.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last-sync gauge from a metrics endpoint (plain HTTP).
async fn last_sync(addr: &str) -> Result<Option<f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await??;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await??;
    // `name value` or `name{labels} value`; kube-proxy has one per IP family.
    Ok(body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        (name.ends_with(LAST_SYNC_METRIC) && !labels.contains("IPv6"))
            .then(|| value.trim().parse().ok())?
    }))
}

async fn create_one(
    svcs: &Api<Service>,
    slices: &Api<EndpointSlice>,
    name: String,
    ip: String,
    backends: &[String],
) -> Result<()> {
    let labels: std::collections::BTreeMap<String, String> =
        [(LABEL.to_string(), "true".to_string())].into();
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(BACKEND_PORT as i32)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    svcs.create(&PostParams::default(), &svc)
        .await
        .with_context(|| format!("create service {name}"))?;
    let mut slice_labels = labels;
    slice_labels.insert("kubernetes.io/service-name".into(), name.clone());
    slice_labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        "bench.nodeconfig.dev".into(),
    );
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{name}-bench")),
            labels: Some(slice_labels),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: backends
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                node_name: Some("nc-node-2".into()),
                ..Default::default()
            })
            .collect::<Vec<_>>()
            .into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(BACKEND_PORT as i32),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    slices
        .create(&PostParams::default(), &slice)
        .await
        .with_context(|| format!("create slice of {name}"))?;
    Ok(())
}

/// Dispatch rules of bench Services in a node's nat table: one per Service port
/// (kube-proxy: `-A KUBE-SERVICES ... "ns/name:port cluster IP" ... -j KUBE-SVC-`;
/// agent: `-A NC-SVCS-<prefix> ... "ns/name:port cluster IP" ... -j NC-SVC-`).
async fn count_rules(netns: &str, jump: &str) -> Result<usize> {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{netns}"))
        .args(["--", "iptables-save", "-t", "nat"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tag = format!("\"{NS}/");
    Ok(text
        .lines()
        .filter(|l| l.contains(&tag) && l.contains("cluster IP\"") && l.contains(jump))
        .count())
}

async fn cleanup(
    svcs: &Api<Service>,
    slices: &Api<EndpointSlice>,
    proxies: &[Proxy; 2],
) -> Result<()> {
    let lp = ListParams::default().labels(&format!("{LABEL}=true"));
    // Services cannot be deleted by collection; one by one, 32 at a time.
    let names: Vec<String> = svcs
        .list_metadata(&lp)
        .await?
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    if !names.is_empty() {
        eprintln!("  deleting {} bench Services", names.len());
    }
    futures::stream::iter(names)
        .map(|n| async move {
            match svcs.delete(&n, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    slices
        .delete_collection(&DeleteParams::default(), &lp)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    for p in proxies {
        loop {
            let c = count_rules(&p.netns, p.svc_jump).await?;
            if c == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {c} bench dispatch rules still there after cleanup",
                    p.name
                );
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    Ok(())
}

async fn connect_median(netns: &str, ip: &str) -> Result<Option<f64>> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{netns}"))
        .arg("--")
        .arg(std::env::current_exe()?)
        .args(["connects", ip, "100"])
        .stdin(Stdio::null())
        .output()?;
    let mut v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    if v.len() < 90 {
        eprintln!(
            "  {netns}: only {} of 100 connects to {ip} succeeded",
            v.len()
        );
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(pct(&v, 50.0))
}

fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (s.len() as f64) - 1.0).ceil().max(0.0) as usize;
    Some(s[idx.min(s.len() - 1)])
}

/// (VmHWM in MiB, utime+stime in s)
fn read_proc(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} exited"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((hwm_kib / 1024.0, ticks / 100.0))
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

fn table_rows(rows: &[(usize, Vec<Figures>)], changes: usize) -> Vec<[String; 5]> {
    let mut out = Vec::new();
    for (n, f) in rows {
        let (a, k) = (&f[0], &f[1]);
        let mut line = |what: String, av: Option<f64>, kv: Option<f64>, prec: usize| {
            out.push([
                n.to_string(),
                what,
                fmt(av, prec),
                fmt(kv, prec),
                ratio(av, kv),
            ]);
        };
        line(
            "all dispatch rules in place (s)".into(),
            a.programmed_s,
            k.programmed_s,
            1,
        );
        let lag = |f: &Figures| Some((f.programmed_s? - f.created_s?).max(0.0));
        line(
            format!(
                "  of which after the last create (s; created in {})",
                fmt(a.created_s, 1)
            ),
            lag(a),
            lag(k),
            1,
        );
        line(
            format!(
                "change latency p50 (ms, {}/{} changes)",
                a.change_n.min(k.change_n),
                changes
            ),
            a.change_p50_ms,
            k.change_p50_ms,
            0,
        );
        line(
            format!(
                "change latency p99 (ms, {}/{} changes)",
                a.change_n.min(k.change_n),
                changes
            ),
            a.change_p99_ms,
            k.change_p99_ms,
            0,
        );
        line(
            "TCP connect, first Service, median of 100 (ms)".into(),
            a.connect_first_ms,
            k.connect_first_ms,
            3,
        );
        line(
            "TCP connect, last Service, median of 100 (ms)".into(),
            a.connect_last_ms,
            k.connect_last_ms,
            3,
        );
        line(
            "peak RSS during the size (MiB)".into(),
            Some(a.hwm_mib),
            Some(k.hwm_mib),
            1,
        );
        line(
            "CPU time during the size (s)".into(),
            Some(a.cpu_s),
            Some(k.cpu_s),
            1,
        );
        if a.cold_start_s.is_some() || k.cold_start_s.is_some() {
            line(
                format!(
                    "cold start: rules of all {} Services in place (s)",
                    n + changes
                ),
                a.cold_start_s,
                k.cold_start_s,
                1,
            );
            line(
                "cold start: peak RSS (MiB)".into(),
                a.cold_hwm_mib,
                k.cold_hwm_mib,
                1,
            );
            line(
                "cold start: CPU time until then (s)".into(),
                a.cold_cpu_s,
                k.cold_cpu_s,
                1,
            );
        }
        if a.change_failed + k.change_failed > 0 {
            out.push([
                n.to_string(),
                "changes without an answer in 60 s".into(),
                a.change_failed.to_string(),
                k.change_failed.to_string(),
                "-".into(),
            ]);
        }
    }
    out
}

fn print_table(rows: &[(usize, Vec<Figures>)], changes: usize) {
    println!();
    println!(
        "{:>8}  {:<50} {:>10} {:>11} {:>8}",
        "services", "measure", "agent", "kube-proxy", "ratio"
    );
    for r in table_rows(rows, changes) {
        println!(
            "{:>8}  {:<50} {:>10} {:>11} {:>8}",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
}

fn table_markdown(rows: &[(usize, Vec<Figures>)], changes: usize) -> String {
    let mut s = String::from("| Services | measure | agent | kube-proxy | agent / kube-proxy |\n|---:|---|---:|---:|---:|\n");
    for r in table_rows(rows, changes) {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r[0], r[1], r[2], r[3], r[4]
        ));
    }
    s
}
