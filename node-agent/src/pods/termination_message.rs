//! A container's termination message, as the kubelet reads it
//! (`getTerminationMessage`, `readLastStringFromContainerLogs` and the
//! status manager's `normalizeStatus`): the file the container wrote at its
//! `terminationMessagePath` (at most the last 4 KiB), or with
//! `FallbackToLogsOnError`, when that is empty and the container failed, the
//! end of its log (the last 80 lines, at most 2 KiB). A pod's messages
//! share 12 KiB. Pure: the shell reads the files.
//!
//! ```text
//!   create: <pod dir>/containers/<name>/<random>  --mount-->  terminationMessagePath
//!   exit:   CRI status mounts + annotations --> TerminationSource --> file | log tail
//! ```
use std::collections::HashMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Container;

use crate::kubelet_server::cri_log::{parse_record, tail_start};

/// Annotation on containers: the container's `terminationMessagePath`.
pub const ANNOTATION_PATH: &str = "nodeconfig.dev/termination-message-path";
/// Annotation on containers: the container's `terminationMessagePolicy`.
pub const ANNOTATION_POLICY: &str = "nodeconfig.dev/termination-message-policy";
/// The kubelet's `MaxContainerTerminationMessageLength`.
pub const MAX_FILE_BYTES: u64 = 4 * 1024;
/// The kubelet's `MaxContainerTerminationMessageLogLines`.
pub const MAX_LOG_LINES: u64 = 80;
/// The kubelet's `MaxContainerTerminationMessageLogLength`.
pub const MAX_LOG_BYTES: usize = 2 * 1024;
/// The kubelet's `MaxPodTerminationMessageLogLength`.
pub const MAX_POD_BYTES: usize = 12 * 1024;
/// The `FallbackToLogsOnError` policy.
const FALLBACK_TO_LOGS: &str = "FallbackToLogsOnError";
/// A container that could not even start has no logs to fall back to.
const CANNOT_RUN: &str = "ContainerCannotRun";

/// The annotations that record where and how the container's message is
/// kept (the kubelet records the same in its own annotations).
pub fn annotations(container: &Container) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(path) = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        out.insert(ANNOTATION_PATH.to_string(), path.to_string());
    }
    if let Some(policy) = container.termination_message_policy.as_deref() {
        out.insert(ANNOTATION_POLICY.to_string(), policy.to_string());
    }
    out
}

/// Where an exited container's message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminationSource {
    /// Nothing to read.
    None,
    /// The host file mounted at the container's `terminationMessagePath`;
    /// `or_logs`: the log's end if it is missing or empty.
    File { host_path: String, or_logs: bool },
    /// The end of the container's log.
    Logs,
}

/// What to read for a container CRI reports (only exited ones have a message).
pub fn source(status: &cri::ContainerStatus) -> TerminationSource {
    if status.state != cri::ContainerState::ContainerExited as i32 {
        return TerminationSource::None;
    }
    let or_logs = status
        .annotations
        .get(ANNOTATION_POLICY)
        .map(String::as_str)
        == Some(FALLBACK_TO_LOGS)
        && status.exit_code != 0
        && status.reason != CANNOT_RUN;
    let mounted = status
        .annotations
        .get(ANNOTATION_PATH)
        .and_then(|path| status.mounts.iter().find(|m| &m.container_path == path));
    match mounted {
        Some(m) => TerminationSource::File {
            host_path: m.host_path.clone(),
            or_logs,
        },
        None if or_logs => TerminationSource::Logs,
        None => TerminationSource::None,
    }
}

/// The end of a CRI log as the message: the content of the last
/// [`MAX_LOG_LINES`] records, at most its last [`MAX_LOG_BYTES`]. `data` is
/// the end of the log file (`whole`: all of it).
pub fn from_log_tail(data: &[u8], whole: bool) -> String {
    let start = tail_start(data, MAX_LOG_LINES, whole).unwrap_or_else(|| {
        // Fewer lines than asked in what was read: skip the cut first line.
        data.iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| i + 1)
    });
    let mut content = Vec::new();
    for line in data[start..].split_inclusive(|b| *b == b'\n') {
        if let Ok(record) = parse_record(line) {
            content.extend_from_slice(record.content);
        }
    }
    let from = content.len().saturating_sub(MAX_LOG_BYTES);
    String::from_utf8_lossy(&content[from..]).into_owned()
}

/// The kubelet's message of an exited container: CRI's own message, then
/// what the container left, joined by `": "`.
pub fn join(runtime_message: &str, termination_message: &str) -> String {
    match (runtime_message.is_empty(), termination_message.is_empty()) {
        (_, true) => runtime_message.to_string(),
        (true, false) => termination_message.to_string(),
        (false, false) => format!("{runtime_message}: {termination_message}"),
    }
}

/// How much of a terminated state's message each container of a pod with
/// `containers` (init, regular and ephemeral) keeps.
pub fn bytes_per_container(containers: usize) -> usize {
    MAX_POD_BYTES / containers.max(1)
}

/// `message` cut to at most `max` bytes, on a character boundary.
pub fn truncate(message: &mut String, max: usize) {
    if message.len() <= max {
        return;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(exit_code: i32, policy: Option<&str>, mounted: bool) -> cri::ContainerStatus {
        let mut annotations = HashMap::from([(
            ANNOTATION_PATH.to_string(),
            "/dev/termination-log".to_string(),
        )]);
        if let Some(policy) = policy {
            annotations.insert(ANNOTATION_POLICY.to_string(), policy.to_string());
        }
        cri::ContainerStatus {
            state: cri::ContainerState::ContainerExited as i32,
            exit_code,
            annotations,
            mounts: if mounted {
                vec![cri::Mount {
                    container_path: "/dev/termination-log".into(),
                    host_path: "/pods/u/containers/app/0a1b2c3d".into(),
                    ..Default::default()
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_file_first_and_the_logs_only_for_a_failed_container_that_asks() {
        let file = |or_logs| TerminationSource::File {
            host_path: "/pods/u/containers/app/0a1b2c3d".into(),
            or_logs,
        };
        assert_eq!(source(&exited(0, None, true)), file(false));
        assert_eq!(source(&exited(1, Some("File"), true)), file(false));
        assert_eq!(
            source(&exited(0, Some(FALLBACK_TO_LOGS), true)),
            file(false)
        );
        assert_eq!(source(&exited(1, Some(FALLBACK_TO_LOGS), true)), file(true));
        assert_eq!(
            source(&exited(1, Some(FALLBACK_TO_LOGS), false)),
            TerminationSource::Logs
        );
        assert_eq!(source(&exited(1, None, false)), TerminationSource::None);

        let mut cannot_run = exited(128, Some(FALLBACK_TO_LOGS), false);
        cannot_run.reason = CANNOT_RUN.into();
        assert_eq!(source(&cannot_run), TerminationSource::None);

        let mut running = exited(0, None, true);
        running.state = cri::ContainerState::ContainerRunning as i32;
        assert_eq!(source(&running), TerminationSource::None);
    }

    #[test]
    fn log_tail_is_the_content_of_the_last_lines() {
        let log = b"2026-01-01T00:00:00.000000001Z stdout F first\n\
                    2026-01-01T00:00:00.000000002Z stderr P DO\n\
                    2026-01-01T00:00:00.000000003Z stdout F NE\n";
        assert_eq!(from_log_tail(log, true), "first\nDONE\n");
        // `echo -n DONE; false`: a partial record ends the log.
        let log = b"2026-01-01T00:00:00.000000001Z stdout P DONE\n";
        assert_eq!(from_log_tail(log, true), "DONE");
    }

    #[test]
    fn log_tail_keeps_80_lines_and_2_kib() {
        let mut log = Vec::new();
        for i in 0..100 {
            log.extend_from_slice(format!("2026-01-01T00:00:00Z stdout F line {i}\n").as_bytes());
        }
        let message = from_log_tail(&log, true);
        assert!(message.starts_with("line 20\n"), "{message}");
        assert!(message.ends_with("line 99\n"));

        let long = "x".repeat(100);
        let mut log = Vec::new();
        for i in 0..50 {
            log.extend_from_slice(
                format!("2026-01-01T00:00:00Z stdout F {i:02}{long}\n").as_bytes(),
            );
        }
        let message = from_log_tail(&log, true);
        assert_eq!(message.len(), MAX_LOG_BYTES);
        assert!(message.ends_with(&format!("49{long}\n")));

        // Read from the middle of a file: the cut first line is skipped.
        let log = b"2026-01-01T00:00:00Z stdout F zero\n\
                    2026-01-01T00:00:00Z stdout F one\n\
                    2026-01-01T00:00:00Z stdout F two\n";
        assert_eq!(from_log_tail(&log[10..], false), "one\ntwo\n");
    }

    #[test]
    fn messages_join_and_share_the_pods_budget() {
        assert_eq!(join("", "DONE"), "DONE");
        assert_eq!(join("OOMKilled", ""), "OOMKilled");
        assert_eq!(join("runtime", "app"), "runtime: app");
        assert_eq!(bytes_per_container(3), 4096);
        assert_eq!(bytes_per_container(0), MAX_POD_BYTES);
        let mut m = "ab€".to_string();
        truncate(&mut m, 3);
        assert_eq!(m, "ab");
        let mut m = "abc".to_string();
        truncate(&mut m, 3);
        assert_eq!(m, "abc");
    }

    #[test]
    fn annotations_carry_path_and_policy() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "a", "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError"}))
        .unwrap();
        let a = annotations(&c);
        assert_eq!(a[ANNOTATION_PATH], "/dev/termination-log");
        assert_eq!(a[ANNOTATION_POLICY], "FallbackToLogsOnError");
        let bare: Container = serde_json::from_value(serde_json::json!({"name": "a"})).unwrap();
        assert!(annotations(&bare).is_empty());
    }
}
