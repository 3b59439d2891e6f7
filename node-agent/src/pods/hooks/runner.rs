//! Runs one lifecycle hook of a started container (the kubelet's
//! `handlerRunner.Run`): an exec through CRI `ExecSync` with no timeout, an
//! HTTP GET to the hook's host or the pod's IP, or a sleep.
use crate::pods::container_runtime::ContainerRuntime;
use crate::pods::hooks::handler::HookAction;
use crate::pods::hooks::http;

/// The kubelet keeps at most this much of a failed exec hook's output.
const MAX_OUTPUT: usize = 10 * 1024;

/// The container a hook runs for.
#[derive(Clone, Copy)]
pub struct HookTarget<'a> {
    pub cri: &'a dyn ContainerRuntime,
    pub container_id: &'a str,
    /// The pod's IP (the node's for a pod on the host's network): where an
    /// HTTP hook without a host goes.
    pub pod_ip: Option<&'a str>,
}

/// Why a hook failed: the error, and an exec hook's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    pub error: String,
    pub output: String,
}

impl HookFailure {
    fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            output: String::new(),
        }
    }
}

/// Runs `action` once for `target`'s container and waits for it.
pub async fn run_hook(action: &HookAction, target: HookTarget<'_>) -> Result<(), HookFailure> {
    match action {
        HookAction::Exec { command } => {
            let out = target
                .cri
                .exec_sync(target.container_id, command, None)
                .await
                .map_err(|e| HookFailure::new(e.to_string()))?;
            if out.exit_code == 0 {
                return Ok(());
            }
            let mut output = out.stdout;
            output.extend_from_slice(&out.stderr);
            output.truncate(MAX_OUTPUT);
            Err(HookFailure {
                // The kubelet's CodeExitError from ExecSync.
                error: format!(
                    "command '{}' exited with {}: {}",
                    command.join(" "),
                    out.exit_code,
                    String::from_utf8_lossy(&out.stderr)
                ),
                output: String::from_utf8_lossy(&output).into_owned(),
            })
        }
        HookAction::Http(get) => {
            let host = match (&get.host, target.pod_ip) {
                (Some(host), _) => host.as_str(),
                (None, Some(ip)) => ip,
                (None, None) => {
                    return Err(HookFailure::new(
                        "failed to find networking container: the pod has no IP address",
                    ))
                }
            };
            http::get(get, host).await.map_err(HookFailure::new)
        }
        HookAction::Sleep(duration) => {
            tokio::time::sleep(*duration).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::locked::Locked;
    use crate::pods::container_runtime::ExecOutput;
    use crate::pods::fake_runtime::FakeRuntime;
    use crate::pods::hooks::handler::HttpGet;
    use crate::pods::probes::check::tests::serve;
    use crate::pods::probes::state::HttpScheme;

    #[tokio::test]
    async fn an_http_hook_without_a_host_goes_to_the_pod_ip() {
        let server = serve(|_| "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into()).await;
        let runtime = FakeRuntime::new();
        let get = HookAction::Http(HttpGet {
            scheme: HttpScheme::Http,
            host: None,
            port: server.port,
            path: "/hook".into(),
            headers: Vec::new(),
        });
        let target = HookTarget {
            cri: runtime.as_ref(),
            container_id: "c",
            pod_ip: Some("127.0.0.1"),
        };
        run_hook(&get, target).await.expect("answered");
        assert!(server.last_request.locked().starts_with("GET /hook "));

        let no_ip = HookTarget {
            pod_ip: None,
            ..target
        };
        let failure = run_hook(&get, no_ip).await.expect_err("nowhere to go");
        assert!(failure
            .error
            .contains("failed to find networking container"));
    }

    #[tokio::test]
    async fn an_exec_hook_fails_on_a_non_zero_exit_with_its_output() {
        let runtime = FakeRuntime::new();
        let sandbox = runtime.add_sandbox("u", true, 0);
        let id = runtime.add_running_container("u", &sandbox, "app", "h");
        runtime.answer_next_exec(ExecOutput {
            exit_code: 2,
            stdout: b"out ".to_vec(),
            stderr: b"err".to_vec(),
        });
        let exec = HookAction::Exec {
            command: vec!["check".into()],
        };
        let target = HookTarget {
            cri: runtime.as_ref(),
            container_id: &id,
            pod_ip: None,
        };
        let failure = run_hook(&exec, target).await.expect_err("exit 2");
        assert_eq!(failure.error, "command 'check' exited with 2: err");
        assert_eq!(failure.output, "out err");
        run_hook(&exec, target).await.expect("exit 0 the next time");
    }

    #[tokio::test]
    async fn a_sleep_hook_waits_its_time() {
        let runtime = FakeRuntime::new();
        let target = HookTarget {
            cri: runtime.as_ref(),
            container_id: "c",
            pod_ip: None,
        };
        let started = std::time::Instant::now();
        run_hook(&HookAction::Sleep(Duration::from_millis(300)), target)
            .await
            .expect("slept");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
