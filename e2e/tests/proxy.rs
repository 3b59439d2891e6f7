//! The service proxy with real traffic, on the local cluster (`e2e/cluster up`):
//! each node's agent programs iptables in its node namespace, and requests
//! from inside the nodes reach busybox httpd backends on the nodes' pod
//! bridges (see `nodeconfig_e2e::backends`), published through Services
//! without selectors and EndpointSlices the tests write.
//!
//! Tests that only add their own Services run side by side (shared turn);
//! those that disturb a node's rules or its agent (flush, restart) run alone
//! (exclusive turn).

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use nodeconfig_e2e::backends::{
    await_dnat_to, dnat_rule_present, get_from_backend, get_from_node, get_many_from_node,
    iptables_save, prepare, run_in_node, tally, unique_name, Backend, ServiceOptions, TestService,
};
use nodeconfig_e2e::cluster::cluster;
use nodeconfig_e2e::kubectl::{condition, eventually, get_json, kubectl};
use nodeconfig_e2e::node::{node_ip, node_name};
use nodeconfig_e2e::{pinned, repo_root};
use serde_json::{json, Value};

static TURN: RwLock<()> = RwLock::new(());

/// A test's turn; when it ends, the test's time (from the turn on) is printed.
struct Turn<G> {
    _guard: G,
    started: Instant,
}

impl<G> Drop for Turn<G> {
    fn drop(&mut self) {
        let test = std::thread::current().name().unwrap_or("test").to_string();
        println!(
            "{test}: {:.1?}{}",
            self.started.elapsed(),
            if std::thread::panicking() {
                " (failed)"
            } else {
                ""
            }
        );
    }
}

fn shared_turn() -> Turn<RwLockReadGuard<'static, ()>> {
    let guard = TURN.read().unwrap_or_else(|p| p.into_inner());
    prepare();
    Turn {
        _guard: guard,
        started: Instant::now(),
    }
}

fn exclusive_turn() -> Turn<RwLockWriteGuard<'static, ()>> {
    let guard = TURN.write().unwrap_or_else(|p| p.into_inner());
    prepare();
    Turn {
        _guard: guard,
        started: Instant::now(),
    }
}

/// How long a change may take to reach the rules (watch, minSyncPeriod, restore).
const PROGRAMMED: Duration = Duration::from_secs(60);

/// Waits until the Service answers from node `node` with one of `names`.
#[track_caller]
fn await_answer(node: usize, svc_url: &str, names: &[&str]) -> String {
    let mut last = String::new();
    let started = Instant::now();
    let got = eventually(
        PROGRAMMED,
        &format!("{svc_url} to answer from {}", node_name(node)),
        || match get_from_node(node, svc_url) {
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
        },
    );
    println!(
        "{svc_url} answered from {} after {:?}",
        node_name(node),
        started.elapsed()
    );
    got
}

/// The lines of `iptables-save` that are ours: in an NC- chain or jumping to one.
fn nc_rule_lines(save: &str) -> Vec<&str> {
    save.lines()
        .filter(|l| l.starts_with("-A ") && l.contains("NC-"))
        .collect()
}

// ---------------------------------------------------------------- traffic

#[test]
fn cluster_ip_spreads_requests_over_every_endpoint() {
    let _turn = shared_turn();
    let a = Backend::start(1, "spread-a");
    let b = Backend::start(1, "spread-b");
    let c = Backend::start(2, "spread-c");
    let svc = TestService::create(&unique_name("spread"), ServiceOptions::default());
    svc.set_endpoints(&[&a, &b, &c]);
    await_dnat_to(2, &svc, &[&a, &b, &c], PROGRAMMED);
    await_answer(2, &svc.url(), &["spread-a", "spread-b", "spread-c"]);

    let started = Instant::now();
    let answers = get_many_from_node(2, &svc.url(), 300);
    let counts = tally(&answers);
    println!(
        "300 requests from nc-node-2 in {:?}: {counts:?}",
        started.elapsed()
    );
    assert_eq!(
        counts.get("<failed>"),
        None,
        "some requests failed: {counts:?}"
    );
    for name in ["spread-a", "spread-b", "spread-c"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            n >= 45,
            "{name} got {n} of 300 requests (< 15%): {counts:?}"
        );
    }
}

#[test]
fn client_ip_affinity_pins_a_client_to_one_endpoint() {
    let _turn = shared_turn();
    let a = Backend::start(1, "sticky-a");
    let b = Backend::start(1, "sticky-b");
    let c = Backend::start(2, "sticky-c");
    let svc = TestService::create(
        &unique_name("sticky"),
        ServiceOptions {
            client_ip_affinity: true,
            ..Default::default()
        },
    );
    svc.set_endpoints(&[&a, &b, &c]);
    await_dnat_to(2, &svc, &[&a, &b, &c], PROGRAMMED);
    let rules = iptables_save(2, "nat");
    assert!(
        rules
            .lines()
            .any(|l| l.contains(&svc.port_label()) && l.contains("-m recent")),
        "no recent-match (affinity) rule for {} in nc-node-2:\n{}",
        svc.port_label(),
        nc_rule_lines(&rules).join("\n")
    );
    let first = await_answer(2, &svc.url(), &["sticky-a", "sticky-b", "sticky-c"]);

    let answers = get_many_from_node(2, &svc.url(), 30);
    let counts = tally(&answers);
    println!("30 requests from nc-node-2 (first went to {first}): {counts:?}");
    assert_eq!(
        counts.len(),
        1,
        "the client was not pinned to one endpoint: {counts:?}"
    );
    assert_eq!(counts.get(&first), Some(&30), "{counts:?}");
}

#[test]
fn node_port_answers_from_the_other_node() {
    let _turn = shared_turn();
    let a = Backend::start(1, "np-a");
    let b = Backend::start(2, "np-b");
    let svc = TestService::create(
        &unique_name("nodeport"),
        ServiceOptions {
            node_port: true,
            ..Default::default()
        },
    );
    svc.set_endpoints(&[&a, &b]);
    let port = svc.node_port.unwrap();
    let url = format!("http://{}:{port}/", node_ip(1));
    await_dnat_to(1, &svc, &[&a, &b], PROGRAMMED);
    await_answer(2, &url, &["np-a", "np-b"]);
    // Both endpoints, also the one back on the client's own node (masquerade makes
    // its answer return through nc-node-1).
    let answers = get_many_from_node(2, &url, 40);
    let counts = tally(&answers);
    println!("40 requests to {url} from nc-node-2: {counts:?}");
    assert_eq!(counts.get("<failed>"), None, "{counts:?}");
    assert!(
        counts.contains_key("np-a") && counts.contains_key("np-b"),
        "{counts:?}"
    );
}

#[test]
fn endpoints_scale_up_and_down() {
    let _turn = shared_turn();
    let a = Backend::start(1, "scale-a");
    let b = Backend::start(2, "scale-b");
    let svc = TestService::create(&unique_name("scale"), ServiceOptions::default());
    svc.set_endpoints(&[&a, &b]);
    await_dnat_to(2, &svc, &[&a, &b], PROGRAMMED);
    await_answer(2, &svc.url(), &["scale-a", "scale-b"]);

    // Up: a third backend starts getting traffic.
    let c = Backend::start(1, "scale-c");
    let started = Instant::now();
    svc.set_endpoints(&[&a, &b, &c]);
    eventually(PROGRAMMED, "scale-c to get traffic", || {
        let counts = tally(&get_many_from_node(2, &svc.url(), 20));
        counts.contains_key("scale-c").then_some(())
    });
    println!(
        "the added endpoint got traffic after {:?}",
        started.elapsed()
    );
    let counts = tally(&get_many_from_node(2, &svc.url(), 90));
    println!("with 3 endpoints: {counts:?}");
    assert_eq!(counts.get("<failed>"), None, "{counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");

    // Down: the removed backend gets nothing, and nothing fails.
    let started = Instant::now();
    svc.set_endpoints(&[&b, &c]);
    eventually(PROGRAMMED, "the rules to drop scale-a", || {
        (!dnat_rule_present(2, &svc, &a)).then_some(())
    });
    println!(
        "the removed endpoint's rules went after {:?}",
        started.elapsed()
    );
    let counts = tally(&get_many_from_node(2, &svc.url(), 60));
    println!("after removing scale-a: {counts:?}");
    assert_eq!(
        counts.get("scale-a"),
        None,
        "a removed endpoint still gets traffic: {counts:?}"
    );
    assert_eq!(counts.get("<failed>"), None, "{counts:?}");
    assert!(
        counts.contains_key("scale-b") && counts.contains_key("scale-c"),
        "{counts:?}"
    );
}

#[test]
fn deleting_a_service_removes_its_rules_and_its_cluster_ip_stops_answering() {
    let _turn = shared_turn();
    let a = Backend::start(1, "gone-a");
    let svc = TestService::create(&unique_name("gone"), ServiceOptions::default());
    svc.set_endpoints(&[&a]);
    await_answer(2, &svc.url(), &["gone-a"]);
    let label = svc.port_label();
    for node in [1, 2] {
        eventually(
            PROGRAMMED,
            &format!("rules for {label} in {}", node_name(node)),
            || iptables_save(node, "nat").contains(&label).then_some(()),
        );
    }

    let started = Instant::now();
    svc.delete();
    for node in [1, 2] {
        eventually(
            PROGRAMMED,
            &format!("{label} to leave {}'s rules", node_name(node)),
            || {
                let gone = !iptables_save(node, "nat").contains(&label)
                    && !iptables_save(node, "filter").contains(&label);
                gone.then_some(())
            },
        );
    }
    println!(
        "rules of {label} gone from both nodes after {:?}",
        started.elapsed()
    );
    // (The ClusterIP may be handed to another test's Service at once; that one
    // must not lead to our backend either.)
    for _ in 0..2 {
        if let Ok(body) = get_from_node(2, &svc.url()) {
            assert_ne!(
                body, "gone-a",
                "the deleted Service's ClusterIP still leads to its backend"
            );
        }
    }
    assert_eq!(
        get_from_node(2, &a.url()).as_deref(),
        Ok("gone-a"),
        "the backend itself still answers"
    );
}

/// A connect to a Service without endpoints is refused, not left to time out.
///
/// The agent rejects TCP with a reset: kube-proxy's ICMP port-unreachable is
/// kept by Linux only as a soft error while connect() holds the socket, so the
/// refusal came with the SYN's retransmit, 1.01-1.05 s later (measured here);
/// with tcp-reset it takes a few milliseconds. The client's own timeout is 2 s,
/// and a timeout does not say "Connection refused".
#[test]
fn a_service_without_endpoints_refuses_at_once() {
    let _turn = shared_turn();
    let client = Backend::start(2, "refused-client");
    let svc = TestService::create(&unique_name("empty"), ServiceOptions::default());
    svc.set_endpoints(&[]);
    let label = svc.port_label();
    // Until the reject rule is in, the host's guard route answers instead ("no route").
    eventually(
        PROGRAMMED,
        &format!("a reject rule for {label} in nc-node-2"),
        || {
            let filter = iptables_save(2, "filter");
            filter
                .lines()
                .any(|l| l.contains(&label) && l.contains("REJECT"))
                .then_some(())
        },
    );
    for attempt in 1..=3 {
        for (from, get) in [
            (
                "nc-node-2",
                Box::new(|| get_from_node(2, &svc.url()))
                    as Box<dyn Fn() -> Result<String, String>>,
            ),
            (
                "a pod-like namespace on nc-node-2",
                Box::new(|| get_from_backend(&client, &svc.url())),
            ),
        ] {
            let started = Instant::now();
            let result = get();
            let took = started.elapsed();
            println!("attempt {attempt} from {from}: {result:?} in {took:?}");
            let err = result.expect_err("a Service without endpoints answered");
            assert!(
                err.contains("Connection refused"),
                "from {from}: not refused: {err}"
            );
            assert!(
                took < Duration::from_millis(500),
                "from {from}: refusal took {took:?}"
            );
        }
    }
}

#[test]
fn the_kubernetes_service_reaches_the_api_server() {
    let _turn = shared_turn();
    let want = pinned("K8S_VERSION");
    for node in [1, 2] {
        let started = Instant::now();
        let body = eventually(
            PROGRAMMED,
            &format!("https://10.96.0.1/version from {}", node_name(node)),
            || {
                run_in_node(
                    node,
                    "curl",
                    &["-sk", "--max-time", "3", "https://10.96.0.1:443/version"],
                )
                .ok()
            },
        );
        let version: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        println!(
            "{}: 10.96.0.1 answered {} after {:?}",
            node_name(node),
            version["gitVersion"],
            started.elapsed()
        );
        assert!(
            version["gitVersion"]
                .as_str()
                .unwrap_or_default()
                .contains(want.trim_start_matches('v')),
            "{version}"
        );
    }
}

#[test]
fn nodeconfig_reports_proxy_status() {
    let _turn = shared_turn();
    let a = Backend::start(1, "status-a");
    let one = TestService::create(&unique_name("status-1"), ServiceOptions::default());
    one.set_endpoints(&[&a]);
    let two = TestService::create(&unique_name("status-2"), ServiceOptions::default());
    two.set_endpoints(&[&a]);
    await_answer(1, &one.url(), &["status-a"]);
    await_answer(1, &two.url(), &["status-a"]);
    for node in [1, 2] {
        let name = node_name(node);
        let nc = eventually(
            PROGRAMMED,
            &format!("{name}: ProxyReady=True and the Services counted"),
            || {
                let nc = get_json("nodeconfig", &name, None)?;
                let ready = condition(&nc, "ProxyReady")?.0 == "True";
                // ours, and default/kubernetes
                let counted = nc["status"]["proxy"]["services"].as_u64()? >= 3
                    && nc["status"]["proxy"]["endpoints"].as_u64()? >= 2;
                (ready && counted).then_some(nc)
            },
        );
        let proxy = &nc["status"]["proxy"];
        println!("{name}: {proxy}");
        assert!(proxy["rules"].as_u64().unwrap_or(0) > 0, "{proxy}");
        assert!(
            proxy["lastSyncTime"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "{proxy}"
        );
        assert!(proxy["failedSyncs"].is_u64(), "{proxy}");
    }
    let table = kubectl(&["get", "nodeconfigs"]).expect_ok("get nodeconfigs");
    println!("{table}");
    let header = table.lines().next().unwrap_or_default();
    let column = |row: &str, title: &str| -> String {
        let at = header
            .find(title)
            .unwrap_or_else(|| panic!("no {title} column: {header}"));
        row.get(at..)
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    for node in [1, 2] {
        let name = node_name(node);
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no row {name}"));
        for title in ["SERVICES", "RULES"] {
            let value = column(row, title);
            assert!(
                value.parse::<u64>().is_ok_and(|n| n > 0),
                "{name}: {title} is {value:?}\n{table}"
            );
        }
    }
}

// ---------------------------------------------------------------- faults (alone)

/// Sets nc-node-N's `spec.proxy.syncPeriod` and puts the old value back when dropped.
struct SyncPeriod {
    node: String,
    old: Value,
}

impl SyncPeriod {
    #[track_caller]
    fn set(node: &str, period: &str) -> SyncPeriod {
        let nc =
            get_json("nodeconfig", node, None).unwrap_or_else(|| panic!("no NodeConfig {node}"));
        let guard = SyncPeriod {
            node: node.into(),
            old: nc["spec"]["proxy"]["syncPeriod"].clone(),
        };
        patch_sync_period(node, json!(period));
        eventually(
            Duration::from_secs(30),
            &format!("{node} to apply syncPeriod {period}"),
            || {
                let nc = get_json("nodeconfig", node, None)?;
                let applied = condition(&nc, "ConfigApplied")?.0 == "True"
                    && nc["status"]["observedGeneration"] == nc["metadata"]["generation"]
                    && nc["spec"]["proxy"]["syncPeriod"] == period;
                applied.then_some(())
            },
        );
        guard
    }
}

fn patch_sync_period(node: &str, value: Value) {
    let patch = json!({"spec": {"proxy": {"syncPeriod": value}}}).to_string();
    kubectl(&["patch", "nodeconfig", node, "--type=merge", "-p", &patch])
        .expect_ok("patch syncPeriod");
}

impl Drop for SyncPeriod {
    fn drop(&mut self) {
        // The server default (30s) returns when the field goes; any other old value is written back.
        let old = if self.old == "30s" || self.old.is_null() {
            Value::Null
        } else {
            self.old.clone()
        };
        let patch = json!({"spec": {"proxy": {"syncPeriod": old}}}).to_string();
        let run = kubectl(&[
            "patch",
            "nodeconfig",
            &self.node,
            "--type=merge",
            "-p",
            &patch,
        ]);
        if !run.ok {
            eprintln!(
                "cleanup: could not put syncPeriod of {} back: {}",
                self.node,
                run.stderr.trim()
            );
        }
    }
}

/// Someone flushes our dispatch chain and deletes the canary chain: the check
/// of the canary, every syncPeriod, finds it gone and a full sync rewrites all.
#[test]
fn rules_flushed_behind_the_agents_back_are_restored_within_sync_period() {
    let _turn = exclusive_turn();
    let node = 1;
    let name = node_name(node);
    let a = Backend::start(1, "flush-a");
    let b = Backend::start(2, "flush-b");
    let svc = TestService::create(&unique_name("flush"), ServiceOptions::default());
    svc.set_endpoints(&[&a, &b]);
    let period = Duration::from_secs(5);
    let _sync = SyncPeriod::set(&name, "5s");
    await_dnat_to(node, &svc, &[&a, &b], PROGRAMMED);
    await_answer(node, &svc.url(), &["flush-a", "flush-b"]);
    let budget = period + Duration::from_secs(3);

    // Someone flushes the dispatch chain and deletes the canary chain.
    run_in_node(
        node,
        "sh",
        &["-c", "iptables -w 5 -t nat -F NC-SERVICES && iptables -w 5 -t nat -F NC-CANARY && iptables -w 5 -t nat -X NC-CANARY"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let flushed = Instant::now();
    eventually(budget, "NC-SERVICES and NC-CANARY to be back", || {
        let nat = iptables_save(node, "nat");
        let back = nat.lines().any(|l| l.starts_with("-A NC-SERVICES "))
            && nat.lines().any(|l| l.starts_with("-A NC-CANARY "));
        back.then_some(())
    });
    println!(
        "{name}: flushed NC-SERVICES and deleted NC-CANARY restored after {:?}",
        flushed.elapsed()
    );
    await_answer(node, &svc.url(), &["flush-a", "flush-b"]);
    let counts = tally(&get_many_from_node(node, &svc.url(), 30));
    assert_eq!(counts.get("<failed>"), None, "{counts:?}");
}

#[test]
fn an_agent_restart_reconverges_without_duplicates() {
    let _turn = exclusive_turn();
    let node = 1;
    let name = node_name(node);
    let a = Backend::start(1, "restart-a");
    let b = Backend::start(2, "restart-b");
    let before = TestService::create(&unique_name("restart-1"), ServiceOptions::default());
    before.set_endpoints(&[&a, &b]);
    await_dnat_to(node, &before, &[&a, &b], PROGRAMMED);
    await_answer(node, &before.url(), &["restart-a", "restart-b"]);

    /// Starts the agent again even when the test fails while it is stopped.
    struct Restart(String);
    impl Drop for Restart {
        fn drop(&mut self) {
            // Not cluster(): a panic while unwinding would abort the test binary.
            let out = std::process::Command::new(repo_root().join("e2e/cluster"))
                .args(["agent", "start", &self.0])
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                other => eprintln!("could not start the agent of {} again: {other:?}", self.0),
            }
        }
    }
    cluster(&["agent", "stop", &name]);
    let restart = Restart(name.clone());
    // Rules stay while the agent is away; a change made meanwhile waits for it.
    let during = TestService::create(&unique_name("restart-2"), ServiceOptions::default());
    during.set_endpoints(&[&b]);
    assert_eq!(
        get_from_node(node, &before.url()).map(|b| b.starts_with("restart-")),
        Ok(true),
        "rules went with the agent"
    );
    drop(restart);
    let started = Instant::now();
    await_answer(node, &during.url(), &["restart-b"]);
    println!(
        "{name}: the agent picked up the change made while it was stopped after {:?}",
        started.elapsed()
    );
    await_answer(node, &before.url(), &["restart-a", "restart-b"]);

    // Let a few syncs pass, then count: every rule of ours once.
    std::thread::sleep(Duration::from_secs(3));
    for table in ["nat", "filter"] {
        let save = iptables_save(node, table);
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for line in nc_rule_lines(&save) {
            *seen.entry(line).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{name} {table}: rules more than once after a restart: {twice:#?}"
        );
        let builtin_jumps: Vec<&str> = seen
            .keys()
            .copied()
            .filter(|l| {
                let chain = l.split_whitespace().nth(1).unwrap_or_default();
                !chain.starts_with("NC-")
            })
            .collect();
        println!("{name} {table}: jumps from built-in chains: {builtin_jumps:#?}");
        let want: &[&str] = if table == "nat" {
            &["PREROUTING", "OUTPUT", "POSTROUTING"]
        } else {
            &["INPUT", "FORWARD", "OUTPUT"]
        };
        for chain in want {
            assert!(
                builtin_jumps
                    .iter()
                    .any(|l| l.starts_with(&format!("-A {chain} "))),
                "{name} {table}: no jump from {chain} to our chains"
            );
        }
    }
    let counts = tally(&get_many_from_node(node, &before.url(), 30));
    assert_eq!(counts.get("<failed>"), None, "{counts:?}");
}
