//! `/metrics/resource`: the kubelet's resource metrics, what metrics-server
//! scrapes for `kubectl top` and the HorizontalPodAutoscaler
//! (`pkg/kubelet/metrics/collectors/resource_metrics.go` of v1.37). Pure:
//! a [`Summary`] in, the Prometheus text exposition out, byte for byte as the
//! kubelet's registry writes it: families sorted by name, samples by their
//! label values, Go's float formatting, the sample times in milliseconds the
//! kubelet puts on usage samples (none on start times and the error gauge).
//!
//! `scrape_error`, deprecated since 1.29 as an ALPHA metric, is hidden by
//! v1.37's registry; `resource_scrape_error` replaces it.

use std::fmt::Write;

use super::summary::{PodStats, Summary, UnixNanos};

/// The Content-Type of the text exposition, as the kubelet's promhttp handler
/// answers a scraper that asks for text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores";

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Clone, Copy)]
enum Stability {
    Alpha,
    Stable,
}

/// One metric's description, as `metrics.NewDesc` gives it.
struct Desc {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    stability: Stability,
}

const NODE_CPU: Desc = Desc {
    name: "node_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the node in core-seconds",
    kind: Kind::Counter,
    stability: Stability::Stable,
};
const NODE_MEMORY: Desc = Desc {
    name: "node_memory_working_set_bytes",
    help: "Current working set of the node in bytes",
    kind: Kind::Gauge,
    stability: Stability::Stable,
};
const NODE_SWAP: Desc = Desc {
    name: "node_swap_usage_bytes",
    help: "Current swap usage of the node in bytes. Reported only on non-windows systems",
    kind: Kind::Gauge,
    stability: Stability::Alpha,
};
const CONTAINER_CPU: Desc = Desc {
    name: "container_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the container in core-seconds",
    kind: Kind::Counter,
    stability: Stability::Stable,
};
const CONTAINER_MEMORY: Desc = Desc {
    name: "container_memory_working_set_bytes",
    help: "Current working set of the container in bytes",
    kind: Kind::Gauge,
    stability: Stability::Stable,
};
const CONTAINER_SWAP: Desc = Desc {
    name: "container_swap_usage_bytes",
    help:
        "Current amount of the container swap usage in bytes. Reported only on non-windows systems",
    kind: Kind::Gauge,
    stability: Stability::Alpha,
};
const CONTAINER_SWAP_LIMIT: Desc = Desc {
    name: "container_swap_limit_bytes",
    help:
        "Current amount of the container swap limit in bytes. Reported only on non-windows systems",
    kind: Kind::Gauge,
    stability: Stability::Alpha,
};
const CONTAINER_START: Desc = Desc {
    name: "container_start_time_seconds",
    help: "Start time of the container since unix epoch in seconds",
    kind: Kind::Gauge,
    stability: Stability::Stable,
};
const POD_CPU: Desc = Desc {
    name: "pod_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the pod in core-seconds",
    kind: Kind::Counter,
    stability: Stability::Stable,
};
const POD_MEMORY: Desc = Desc {
    name: "pod_memory_working_set_bytes",
    help: "Current working set of the pod in bytes",
    kind: Kind::Gauge,
    stability: Stability::Stable,
};
const POD_SWAP: Desc = Desc {
    name: "pod_swap_usage_bytes",
    help: "Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
    kind: Kind::Gauge,
    stability: Stability::Alpha,
};
const SCRAPE_ERROR: Desc = Desc {
    name: "resource_scrape_error",
    help: "1 if there was an error while getting container metrics, 0 otherwise",
    kind: Kind::Gauge,
    stability: Stability::Stable,
};

/// One sample: label pairs sorted by name, the value, and its time in ms.
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: f64,
    timestamp_ms: Option<i64>,
}

/// The samples of each metric, as the collector sends them.
#[derive(Default)]
struct Collected {
    families: Vec<(&'static Desc, Vec<Sample>)>,
}

impl Collected {
    fn push(&mut self, desc: &'static Desc, sample: Sample) {
        match self.families.iter_mut().find(|(d, _)| d.name == desc.name) {
            Some((_, samples)) => samples.push(sample),
            None => self.families.push((desc, vec![sample])),
        }
    }

    fn at(
        &mut self,
        desc: &'static Desc,
        labels: Vec<(&'static str, String)>,
        value: f64,
        time: UnixNanos,
    ) {
        self.push(
            desc,
            Sample {
                labels,
                value,
                timestamp_ms: Some(time.div_euclid(1_000_000)),
            },
        );
    }
}

/// The exposition for `summary`, or for a failed read (`None`): then only
/// the error gauge, at 1.
pub fn render(summary: Option<&Summary>) -> String {
    let mut collected = Collected::default();
    let error = if summary.is_some() { 0.0 } else { 1.0 };
    if let Some(summary) = summary {
        collect(summary, &mut collected);
    }
    collected.push(
        &SCRAPE_ERROR,
        Sample {
            labels: Vec::new(),
            value: error,
            timestamp_ms: None,
        },
    );
    write_text(collected)
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// What `CollectWithStability` sends for a summary.
fn collect(summary: &Summary, out: &mut Collected) {
    let node = &summary.node;
    if let Some(cpu) = node.cpu {
        if let Some(usage) = cpu.usage_core_nano_seconds {
            out.at(&NODE_CPU, Vec::new(), seconds(usage), cpu.time);
        }
    }
    let memory_time = node.memory.map(|m| m.time);
    if let Some(memory) = node.memory {
        if let Some(working_set) = memory.working_set_bytes {
            out.at(&NODE_MEMORY, Vec::new(), working_set as f64, memory.time);
        }
    }
    // The kubelet stamps the node's swap with its memory reading's time.
    if let (Some(swap), Some(time)) = (node.swap, memory_time) {
        if let Some(usage) = swap.swap_usage_bytes {
            out.at(&NODE_SWAP, Vec::new(), usage as f64, time);
        }
    }
    for pod in &summary.pods {
        collect_pod(pod, out);
    }
}

fn collect_pod(pod: &PodStats, out: &mut Collected) {
    for container in &pod.containers {
        let labels = || {
            vec![
                ("container", container.name.clone()),
                ("namespace", pod.namespace.clone()),
                ("pod", pod.name.clone()),
            ]
        };
        if container.start_time.div_euclid(1_000_000_000) > 0 {
            out.push(
                &CONTAINER_START,
                Sample {
                    labels: labels(),
                    value: container.start_time as f64 / 1e9,
                    timestamp_ms: None,
                },
            );
        }
        if let Some(cpu) = container.cpu {
            if let Some(usage) = cpu.usage_core_nano_seconds {
                out.at(&CONTAINER_CPU, labels(), seconds(usage), cpu.time);
            }
        }
        if let Some(memory) = container.memory {
            if let Some(working_set) = memory.working_set_bytes {
                out.at(&CONTAINER_MEMORY, labels(), working_set as f64, memory.time);
            }
        }
        if let Some(swap) = container.swap {
            if let Some(usage) = swap.swap_usage_bytes {
                out.at(&CONTAINER_SWAP, labels(), usage as f64, swap.time);
            }
            if let Some(available) = swap.swap_available_bytes {
                let limit = available as f64 + swap.swap_usage_bytes.unwrap_or(0) as f64;
                out.at(&CONTAINER_SWAP_LIMIT, labels(), limit, swap.time);
            }
        }
    }
    let labels = || {
        vec![
            ("namespace", pod.namespace.clone()),
            ("pod", pod.name.clone()),
        ]
    };
    if let Some(cpu) = pod.cpu {
        if let Some(usage) = cpu.usage_core_nano_seconds {
            out.at(&POD_CPU, labels(), seconds(usage), cpu.time);
        }
    }
    if let Some(memory) = pod.memory {
        if let Some(working_set) = memory.working_set_bytes {
            out.at(&POD_MEMORY, labels(), working_set as f64, memory.time);
        }
    }
    if let Some(swap) = pod.swap {
        if let Some(usage) = swap.swap_usage_bytes {
            out.at(&POD_SWAP, labels(), usage as f64, swap.time);
        }
    }
}

/// The text format as Go's registry gathers and expfmt writes it.
fn write_text(collected: Collected) -> String {
    let mut families = collected.families;
    families.sort_by_key(|(desc, _)| desc.name);
    let mut out = String::new();
    for (desc, mut samples) in families {
        samples.sort_by(|a, b| {
            let values = |s: &Sample| s.labels.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>();
            values(a)
                .cmp(&values(b))
                .then(a.timestamp_ms.cmp(&b.timestamp_ms))
        });
        let stability = match desc.stability {
            Stability::Alpha => "ALPHA",
            Stability::Stable => "STABLE",
        };
        let kind = match desc.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(
            out,
            "# HELP {} [{stability}] {}",
            desc.name,
            escape_help(desc.help)
        );
        let _ = writeln!(out, "# TYPE {} {kind}", desc.name);
        for sample in samples {
            out.push_str(desc.name);
            if !sample.labels.is_empty() {
                let pairs: Vec<String> = sample
                    .labels
                    .iter()
                    .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
                    .collect();
                let _ = write!(out, "{{{}}}", pairs.join(","));
            }
            let _ = write!(out, " {}", go_float(sample.value));
            if let Some(ms) = sample.timestamp_ms {
                let _ = write!(out, " {ms}");
            }
            out.push('\n');
        }
    }
    out
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)`, which the text
/// format uses: the shortest digits that read back the same, in exponent
/// form (`1.6243962483020916e+09`, `1e-05`) when the exponent is below -4 or
/// 6 and above.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return "0".into();
    }
    let scientific = format!("{f:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        return format!("{f}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::super::summary::{ContainerStats, CpuStats, MemoryStats, NodeStats, SwapStats};
    use super::*;

    // 2021-06-23 05:11:18.302091597 +0800, the kubelet's test time.
    const T: i64 = 1_624_396_278_302_091_597;

    fn container(name: &str, start: i64) -> ContainerStats {
        ContainerStats {
            id: name.into(),
            name: name.into(),
            start_time: start,
            cpu: Some(CpuStats {
                time: T,
                usage_core_nano_seconds: Some(10_000_000_000),
            }),
            memory: Some(MemoryStats {
                time: T,
                working_set_bytes: Some(1000),
            }),
            swap: None,
        }
    }

    fn pod(name: &str, namespace: &str, containers: Vec<ContainerStats>) -> PodStats {
        PodStats {
            name: name.into(),
            namespace: namespace.into(),
            uid: String::new(),
            start_time: 0,
            containers,
            cpu: None,
            memory: None,
            swap: None,
        }
    }

    #[test]
    fn a_failed_read_is_the_error_gauge_alone() {
        assert_eq!(
            render(None),
            "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n\
             # TYPE resource_scrape_error gauge\n\
             resource_scrape_error 1\n"
        );
    }

    #[test]
    fn node_samples_carry_their_reading_times() {
        let summary = Summary {
            node: NodeStats {
                cpu: Some(CpuStats {
                    time: T,
                    usage_core_nano_seconds: Some(10_000_000_000),
                }),
                memory: Some(MemoryStats {
                    time: T,
                    working_set_bytes: Some(1000),
                }),
                swap: Some(SwapStats {
                    time: T + 10_000_000_000,
                    swap_usage_bytes: Some(500),
                    swap_available_bytes: None,
                }),
            },
            pods: Vec::new(),
        };
        assert_eq!(
            render(Some(&summary)),
            "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n\
             # TYPE node_cpu_usage_seconds_total counter\n\
             node_cpu_usage_seconds_total 10 1624396278302\n\
             # HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n\
             # TYPE node_memory_working_set_bytes gauge\n\
             node_memory_working_set_bytes 1000 1624396278302\n\
             # HELP node_swap_usage_bytes [ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems\n\
             # TYPE node_swap_usage_bytes gauge\n\
             node_swap_usage_bytes 500 1624396278302\n\
             # HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n\
             # TYPE resource_scrape_error gauge\n\
             resource_scrape_error 0\n"
        );
    }

    #[test]
    fn containers_sort_by_container_then_namespace_then_pod() {
        let summary = Summary {
            node: NodeStats::default(),
            pods: vec![
                pod(
                    "pod_a",
                    "namespace_a",
                    vec![
                        container("container_a", T - 30_000_000_000),
                        container("container_b", T - 120_000_000_000),
                    ],
                ),
                pod(
                    "pod_b",
                    "namespace_b",
                    vec![container("container_a", T - 600_000_000_000)],
                ),
            ],
        };
        assert_eq!(
            render(Some(&summary)),
            "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n\
             # TYPE container_cpu_usage_seconds_total counter\n\
             container_cpu_usage_seconds_total{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 10 1624396278302\n\
             container_cpu_usage_seconds_total{container=\"container_a\",namespace=\"namespace_b\",pod=\"pod_b\"} 10 1624396278302\n\
             container_cpu_usage_seconds_total{container=\"container_b\",namespace=\"namespace_a\",pod=\"pod_a\"} 10 1624396278302\n\
             # HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n\
             # TYPE container_memory_working_set_bytes gauge\n\
             container_memory_working_set_bytes{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1000 1624396278302\n\
             container_memory_working_set_bytes{container=\"container_a\",namespace=\"namespace_b\",pod=\"pod_b\"} 1000 1624396278302\n\
             container_memory_working_set_bytes{container=\"container_b\",namespace=\"namespace_a\",pod=\"pod_a\"} 1000 1624396278302\n\
             # HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds\n\
             # TYPE container_start_time_seconds gauge\n\
             container_start_time_seconds{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1.6243962483020916e+09\n\
             container_start_time_seconds{container=\"container_a\",namespace=\"namespace_b\",pod=\"pod_b\"} 1.6243956783020916e+09\n\
             container_start_time_seconds{container=\"container_b\",namespace=\"namespace_a\",pod=\"pod_a\"} 1.6243961583020916e+09\n\
             # HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n\
             # TYPE resource_scrape_error gauge\n\
             resource_scrape_error 0\n"
        );
    }

    #[test]
    fn pods_swap_and_start_times_before_the_epoch() {
        let mut c = container("c", -T);
        c.swap = Some(SwapStats {
            time: T,
            swap_usage_bytes: Some(1000),
            swap_available_bytes: Some(9000),
        });
        let mut p = pod("p", "n", vec![c]);
        p.cpu = Some(CpuStats {
            time: T,
            usage_core_nano_seconds: Some(1_500_000_000),
        });
        p.memory = Some(MemoryStats {
            time: T,
            working_set_bytes: Some(12_345_678),
        });
        p.swap = Some(SwapStats {
            time: T,
            swap_usage_bytes: Some(0),
            swap_available_bytes: Some(0),
        });
        let text = render(Some(&Summary {
            node: NodeStats::default(),
            pods: vec![p],
        }));
        assert!(!text.contains("container_start_time_seconds"), "{text}");
        for line in [
            "container_swap_usage_bytes{container=\"c\",namespace=\"n\",pod=\"p\"} 1000 1624396278302\n",
            "container_swap_limit_bytes{container=\"c\",namespace=\"n\",pod=\"p\"} 10000 1624396278302\n",
            "# TYPE pod_cpu_usage_seconds_total counter\npod_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\"} 1.5 1624396278302\n",
            "pod_memory_working_set_bytes{namespace=\"n\",pod=\"p\"} 1.2345678e+07 1624396278302\n",
            "pod_swap_usage_bytes{namespace=\"n\",pod=\"p\"} 0 1624396278302\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(Some(&Summary {
            node: NodeStats::default(),
            pods: vec![pod("a\"b\\c\nd", "n", vec![container("c", T)])],
        }));
        assert!(text.contains("pod=\"a\\\"b\\\\c\\nd\""), "{text}");
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        for (f, go) in [
            (10.0, "10"),
            (1000.0, "1000"),
            (999_999.0, "999999"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1_624_396_248.302_091_6, "1.6243962483020916e+09"),
            (34_309.615_577_302, "34309.615577302"),
            (3.5e21, "3.5e+21"),
            (123_456_789_012.0, "1.23456789012e+11"),
            (1e100, "1e+100"),
            (-2.5e-7, "-2.5e-07"),
            (1.0, "1"),
            (0.0, "0"),
            (-1.0, "-1"),
        ] {
            assert_eq!(go_float(f), go, "{f}");
        }
        assert_eq!(go_float(f64::NAN), "NaN");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
    }
}
