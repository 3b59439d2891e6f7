//! kubectl against the local cluster, as a user would type it.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{admin_kubeconfig, k8s_bin};

/// What one kubectl run printed.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Self {
        Self {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// stdout of a run that must have succeeded.
    #[track_caller]
    pub fn expect_ok(self, what: &str) -> String {
        assert!(
            self.ok,
            "kubectl {what} failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }
}

/// Runs kubectl with the admin kubeconfig.
pub fn kubectl(args: &[&str]) -> Run {
    kubectl_with_stdin(args, None)
}

/// Runs kubectl with `stdin` as its input (for `apply -f -`).
pub fn kubectl_with_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(k8s_bin("kubectl"));
    cmd.arg("--kubeconfig").arg(admin_kubeconfig()).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e} (is the control plane built? run e2e/cluster up)",
            k8s_bin("kubectl").display()
        )
    });
    if let Some(input) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input.as_bytes())
                .expect("write kubectl stdin");
        }
    }
    Run::from_output(child.wait_with_output().expect("wait for kubectl"))
}

/// Applies a manifest given as YAML text.
pub fn apply(yaml: &str) -> Run {
    kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml))
}

/// Creates objects from YAML text (fails when they exist, unlike apply).
pub fn create(yaml: &str) -> Run {
    kubectl_with_stdin(&["create", "-f", "-"], Some(yaml))
}

/// Retries `f` until it returns `Some`, or panics with `what` after `timeout`.
#[track_caller]
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Fails the test at once when the cluster's API server does not answer.
#[track_caller]
pub fn require_cluster() {
    let run = kubectl(&["get", "--raw", "/readyz"]);
    assert!(
        run.ok,
        "the local cluster is not up (start it with `e2e/cluster up`): {}",
        run.stderr.trim()
    );
}

/// An object as JSON, or None when it does not exist.
pub fn get_json(kind: &str, name: &str, namespace: Option<&str>) -> Option<serde_json::Value> {
    let mut args = vec!["get", kind, name, "-o", "json", "--ignore-not-found"];
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    let run = kubectl(&args);
    if !run.ok || run.stdout.trim().is_empty() {
        return None;
    }
    serde_json::from_str(&run.stdout).ok()
}

/// `(status, reason)` of the condition `type_` in `object.status.conditions`.
pub fn condition(object: &serde_json::Value, type_: &str) -> Option<(String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}
