//! What a lifecycle hook does, pure: the container's `postStart` or
//! `preStop` handler turned into a [`HookAction`] (ports resolved against the
//! container's ports, as the prober does), the kubelet's failure messages,
//! and how much of the grace period is left for `StopContainer` once a
//! preStop hook has run (the kubelet's `killContainer`).
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use crate::pods::probes::state::{probe_action, HttpScheme, ProbeAction};

/// `User-Agent` of HTTP hooks, as the kubelet of the pinned Kubernetes minor
/// sends it (`kube-lifecycle/<major>.<minor>`).
pub const HOOK_USER_AGENT: &str = "kube-lifecycle/1.37";

/// The kubelet's `minimumGracePeriodInSeconds`: a container always gets
/// this long between SIGTERM and SIGKILL.
pub const MINIMUM_GRACE_SECONDS: i64 = 2;

/// Which of a container's two hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    PostStart,
    PreStop,
}

impl HookKind {
    /// The container's handler of this kind, if it has one.
    pub fn of(self, container: &Container) -> Option<&LifecycleHandler> {
        let lifecycle = container.lifecycle.as_ref()?;
        match self {
            Self::PostStart => lifecycle.post_start.as_ref(),
            Self::PreStop => lifecycle.pre_stop.as_ref(),
        }
    }

    /// The reason of the Warning event when the hook fails.
    pub fn failed_reason(self) -> &'static str {
        match self {
            Self::PostStart => "FailedPostStartHook",
            Self::PreStop => "FailedPreStopHook",
        }
    }

    /// The note of that event: the kubelet leaves the hook's output out, so
    /// secrets in it do not reach the API server.
    pub fn failed_note(self) -> &'static str {
        match self {
            Self::PostStart => "PostStartHook failed",
            Self::PreStop => "PreStopHook failed",
        }
    }
}

/// An HTTP GET hook; `host` defaults to the pod's IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    pub scheme: HttpScheme,
    pub host: Option<String>,
    pub port: u16,
    /// Starts with `/`; may carry a query.
    pub path: String,
    /// The user's headers, then `User-Agent` when they set none.
    pub headers: Vec<(String, String)>,
}

/// What a hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// Run a command in the container (`ExecSync`); a non-zero exit fails.
    Exec { command: Vec<String> },
    /// GET a URL; only a failed connection or request fails, not the status.
    Http(HttpGet),
    /// Wait this long.
    Sleep(Duration),
}

/// What `handler` does for `container`. Errs for a handler with no action
/// the kubelet runs (`tcpSocket` is accepted by the API but never run), an
/// exec without a command, or a port that is neither a number nor the name
/// of one of the container's ports.
pub fn hook_action(
    handler: &LifecycleHandler,
    container: &Container,
) -> Result<HookAction, String> {
    if let Some(sleep) = &handler.sleep {
        return Ok(HookAction::Sleep(Duration::from_secs(
            u64::try_from(sleep.seconds).unwrap_or(0),
        )));
    }
    if handler.exec.is_none() && handler.http_get.is_none() {
        return Err(format!(
            "invalid handler: the lifecycle hook of container {:?} has no exec, httpGet or sleep action",
            container.name
        ));
    }
    // Exec and HTTP GET read as the prober's: one resolution of ports and paths.
    let as_probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        ..Probe::default()
    };
    match probe_action(&as_probe, container)? {
        ProbeAction::Exec { command } => Ok(HookAction::Exec { command }),
        ProbeAction::Http {
            scheme,
            host,
            port,
            path,
            mut headers,
        } => {
            if !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
            {
                headers.push(("User-Agent".to_string(), HOOK_USER_AGENT.to_string()));
            }
            Ok(HookAction::Http(HttpGet {
                scheme,
                host,
                port,
                path,
                headers,
            }))
        }
        other => Err(format!("invalid handler: {other:?}")),
    }
}

/// The message of a failed hook, worded as the kubelet's (it becomes the
/// container's waiting message after a failed postStart); `pod` is
/// `name_namespace(uid)`.
pub fn failure_message(
    action: &HookAction,
    container: &str,
    pod: &str,
    error: &str,
    output: &str,
) -> String {
    match action {
        HookAction::Exec { command } => format!(
            "Exec lifecycle hook ([{}]) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {output:?}",
            command.join(" ")
        ),
        HookAction::Http(get) => format!(
            "HTTP lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - error: {error}",
            get.path
        ),
        HookAction::Sleep(d) => format!(
            "Sleep lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - error: {error}",
            d.as_secs()
        ),
    }
}

/// The grace period `StopContainer` gets after a preStop hook that took
/// `hook_took` of `grace` seconds: what is left (whole seconds, as the
/// kubelet truncates), never less than [`MINIMUM_GRACE_SECONDS`].
pub fn stop_grace(grace: i64, hook_took: Duration) -> i64 {
    let took = i64::try_from(hook_took.as_secs()).unwrap_or(i64::MAX);
    grace.saturating_sub(took).max(MINIMUM_GRACE_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).expect("a valid container")
    }

    fn handler(value: serde_json::Value) -> LifecycleHandler {
        serde_json::from_value(value).expect("a valid handler")
    }

    #[test]
    fn each_kind_of_hook_reads_as_the_kubelet_runs_it() {
        let web = container(serde_json::json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
        }));
        let cases = [
            (
                serde_json::json!({"exec": {"command": ["sh", "-c", "echo hi"]}}),
                Ok(HookAction::Exec {
                    command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                }),
            ),
            (
                serde_json::json!({"httpGet": {"path": "echo?msg=poststart", "port": "http"}}),
                Ok(HookAction::Http(HttpGet {
                    scheme: HttpScheme::Http,
                    host: None,
                    port: 8080,
                    path: "/echo?msg=poststart".into(),
                    headers: vec![("User-Agent".into(), HOOK_USER_AGENT.into())],
                })),
            ),
            (
                serde_json::json!({"httpGet": {"host": "10.0.0.9", "scheme": "HTTPS", "port": 443,
                    "httpHeaders": [{"name": "user-agent", "value": "mine"}, {"name": "X-A", "value": "1"}]}}),
                Ok(HookAction::Http(HttpGet {
                    scheme: HttpScheme::Https,
                    host: Some("10.0.0.9".into()),
                    port: 443,
                    path: "/".into(),
                    headers: vec![
                        ("user-agent".into(), "mine".into()),
                        ("X-A".into(), "1".into()),
                    ],
                })),
            ),
            (
                serde_json::json!({"sleep": {"seconds": 5}}),
                Ok(HookAction::Sleep(Duration::from_secs(5))),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(hook_action(&handler(value.clone()), &web), want, "{value}");
        }
    }

    #[test]
    fn a_hook_the_kubelet_would_not_run_is_an_error() {
        let web = container(serde_json::json!({"name": "web"}));
        for value in [
            serde_json::json!({}),
            serde_json::json!({"tcpSocket": {"port": 80}}),
            serde_json::json!({"exec": {"command": []}}),
            serde_json::json!({"httpGet": {"port": "metrics"}}),
        ] {
            assert!(
                hook_action(&handler(value.clone()), &web).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn the_container_names_its_hooks() {
        let c = container(serde_json::json!({
            "name": "web",
            "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
        }));
        assert!(HookKind::PostStart.of(&c).is_none());
        assert!(HookKind::PreStop.of(&c).is_some());
        assert_eq!(HookKind::PostStart.failed_reason(), "FailedPostStartHook");
        assert_eq!(HookKind::PreStop.failed_reason(), "FailedPreStopHook");
    }

    #[test]
    fn the_stop_gets_the_grace_the_hook_left_and_never_less_than_two_seconds() {
        assert_eq!(stop_grace(30, Duration::from_millis(400)), 30);
        assert_eq!(stop_grace(30, Duration::from_millis(10_900)), 20);
        assert_eq!(stop_grace(15, Duration::from_secs(14)), 2);
        assert_eq!(stop_grace(15, Duration::from_secs(40)), 2);
        assert_eq!(stop_grace(0, Duration::ZERO), 2);
    }

    #[test]
    fn failure_messages_read_as_the_kubelets() {
        let exec = HookAction::Exec {
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        };
        assert_eq!(
            failure_message(&exec, "web", "p_ns(u)", "command 'sh -c exit 3' exited with 3: ", "boom"),
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"web\" in Pod \"p_ns(u)\" failed - error: command 'sh -c exit 3' exited with 3: , message: \"boom\""
        );
        let get = HookAction::Http(HttpGet {
            scheme: HttpScheme::Http,
            host: None,
            port: 80,
            path: "/hook".into(),
            headers: Vec::new(),
        });
        assert!(failure_message(&get, "web", "p_ns(u)", "refused", "")
            .starts_with("HTTP lifecycle hook (/hook) for Container \"web\""));
    }
}
