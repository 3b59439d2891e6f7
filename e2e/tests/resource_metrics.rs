//! The kubelet's resource metrics on an agent node, end to end (`e2e/cluster
//! up`): the API server's node proxy reaches the agent's
//! `/metrics/resource`, which names a busy pod's container with its CPU time,
//! working set and start time (samples stamped with their reading times, as
//! the kubelet's are), and `/stats/summary` with the same readings;
//! metrics-server (deployed by the cluster, as a cluster's add-on) scrapes
//! it, so `kubectl top pod` shows the pod's CPU and memory and `kubectl top
//! node` the agent's nodes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodeconfig_e2e::kubectl::{eventually, get_json, kubectl};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::node::node_name;
use nodeconfig_e2e::pod::{await_pod, busybox, running_and_ready};
use serde_json::json;

const CONTAINER: &str = "burn";

/// A pod on agent node `node` whose one container holds about 8 MiB (a shell
/// variable) and burns CPU, capped at 200m so the shared machine keeps its cores.
fn burner(ns: &Namespace, name: &str, node: &str) {
    let mut container = busybox(
        CONTAINER,
        "x=$(head -c 8000000 /dev/zero | tr '\\0' a); while :; do :; done",
    );
    container["resources"] = json!({"requests": {"cpu": "10m"}, "limits": {"cpu": "200m"}});
    apply_json(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns.0},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }));
    await_pod(
        &ns.0,
        name,
        "Running",
        Duration::from_secs(90),
        running_and_ready,
    );
}

/// `<value> [<timestamp ms>]` of the sample `series` in a text exposition.
fn sample(text: &str, series: &str) -> Option<(f64, Option<i64>)> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        let mut fields = rest.split_whitespace();
        let value = fields.next()?.parse().ok()?;
        let timestamp = fields.next().and_then(|t| t.parse().ok());
        Some((value, timestamp))
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A sample's time is its reading's: within a minute of now.
#[track_caller]
fn recent(series: &str, timestamp: Option<i64>) {
    let ts = timestamp.unwrap_or_else(|| panic!("{series} has no timestamp"));
    assert!(
        (now_ms() - ts).abs() < 60_000,
        "{series} stamped {ts}, now {}",
        now_ms()
    );
}

#[test]
fn the_node_proxy_serves_the_containers_resource_metrics() {
    let ns = Namespace::new("resmetrics-raw");
    let node = node_name(1);
    burner(&ns, "burner", &node);
    let path = format!("/api/v1/nodes/{node}/proxy/metrics/resource");
    let labels = format!(
        "{{container=\"{CONTAINER}\",namespace=\"{}\",pod=\"burner\"}}",
        ns.0
    );
    let cpu_series = format!("container_cpu_usage_seconds_total{labels}");
    let text = eventually(
        Duration::from_secs(30),
        "the container's CPU time above 0",
        || {
            let run = kubectl(&["get", "--raw", &path]);
            assert!(run.ok, "GET {path}: {}", run.stderr);
            sample(&run.stdout, &cpu_series)
                .filter(|(cpu, _)| *cpu > 0.0)
                .map(|_| run.stdout)
        },
    );

    let (_, cpu_time) = sample(&text, &cpu_series).unwrap_or_default();
    recent(&cpu_series, cpu_time);
    let memory_series = format!("container_memory_working_set_bytes{labels}");
    let (memory, memory_time) =
        sample(&text, &memory_series).unwrap_or_else(|| panic!("no {memory_series} in\n{text}"));
    assert!(
        memory > 1_000_000.0,
        "{memory_series} {memory}: the shell holds 8 MB"
    );
    recent(&memory_series, memory_time);
    let start_series = format!("container_start_time_seconds{labels}");
    let (start, start_time) =
        sample(&text, &start_series).unwrap_or_else(|| panic!("no {start_series} in\n{text}"));
    assert!(
        (now_ms() as f64 / 1000.0 - start).abs() < 300.0 && start_time.is_none(),
        "{start_series} {start} {start_time:?}"
    );
    let pod_series = format!(
        "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"burner\"}}",
        ns.0
    );
    let (pod_cpu, _) =
        sample(&text, &pod_series).unwrap_or_else(|| panic!("no {pod_series} in\n{text}"));
    assert!(pod_cpu > 0.0, "{pod_series} {pod_cpu}");
    for series in [
        "node_cpu_usage_seconds_total",
        "node_memory_working_set_bytes",
    ] {
        let (value, timestamp) =
            sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(value > 0.0, "{series} {value}");
        recent(series, timestamp);
    }
    assert_eq!(
        sample(&text, "resource_scrape_error"),
        Some((0.0, None)),
        "{text}"
    );
    assert!(
        text.contains("# TYPE container_cpu_usage_seconds_total counter\n"),
        "{text}"
    );
    // The same readings as the Summary API's CPU and memory part.
    let path = format!("/api/v1/nodes/{node}/proxy/stats/summary?only_cpu_and_memory=true");
    let summary: serde_json::Value =
        serde_json::from_str(&kubectl(&["get", "--raw", &path]).expect_ok("GET stats/summary"))
            .expect("the summary is JSON");
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    assert!(summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0));
    let pod = summary["pods"]
        .as_array()
        .and_then(|pods| {
            pods.iter().find(|p| {
                p["podRef"]["name"] == "burner" && p["podRef"]["namespace"] == ns.0.as_str()
            })
        })
        .unwrap_or_else(|| panic!("no burner pod in {summary}"));
    let container = &pod["containers"][0];
    assert_eq!(container["name"], CONTAINER);
    assert!(
        container["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{pod}"
    );
    assert!(
        container["memory"]["workingSetBytes"].as_u64() > Some(1_000_000),
        "{pod}"
    );
}

/// `(cpu millicores, memory MiB)` of `kubectl top`'s line for `name`.
fn top_line(out: &str, name: &str) -> Option<(u64, u64)> {
    out.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() != Some(&name) {
            return None;
        }
        let cpu = fields.get(1)?.strip_suffix('m')?.parse().ok()?;
        let memory = fields
            .iter()
            .find_map(|f| f.strip_suffix("Mi")?.parse().ok())?;
        Some((cpu, memory))
    })
}

#[test]
fn kubectl_top_shows_a_busy_pod_and_the_agent_nodes() {
    eventually(
        Duration::from_secs(120),
        "the metrics.k8s.io APIService Available",
        || {
            get_json("apiservice", "v1beta1.metrics.k8s.io", None)
                .and_then(|a| nodeconfig_e2e::kubectl::condition(&a, "Available"))
                .filter(|(status, _)| status == "True")
        },
    );
    let ns = Namespace::new("resmetrics-top");
    burner(&ns, "burner", &node_name(2));

    // metrics-server needs two scrapes of the running container (15 s apart).
    let (cpu, memory) = eventually(Duration::from_secs(120), "the pod in kubectl top", || {
        let run = kubectl(&["top", "pod", "burner", "-n", &ns.0, "--no-headers"]);
        top_line(&run.stdout, "burner").filter(|(cpu, memory)| *cpu > 0 && *memory > 0)
    });
    assert!(cpu <= 250, "capped at 200m, kubectl top says {cpu}m");
    assert!(
        memory >= 7,
        "the shell holds 8 MB, kubectl top says {memory}Mi"
    );

    let containers = kubectl(&[
        "top",
        "pod",
        "burner",
        "-n",
        &ns.0,
        "--containers",
        "--no-headers",
    ])
    .expect_ok("top pod --containers");
    assert!(
        containers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["burner", CONTAINER])),
        "{containers}"
    );

    // Each agent node with its use (a node without metrics shows <unknown>).
    eventually(
        Duration::from_secs(60),
        "both agent nodes in kubectl top",
        || {
            let run = kubectl(&["top", "node", "--no-headers"]);
            (1..=2)
                .all(|i| {
                    top_line(&run.stdout, &node_name(i))
                        .is_some_and(|(cpu, memory)| cpu > 0 && memory > 0)
                })
                .then_some(())
        },
    );
}
