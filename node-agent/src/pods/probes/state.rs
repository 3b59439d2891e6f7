//! Container probes, functional core, after the kubelet's prober worker
//! (`pkg/kubelet/prober/worker.go`): for one container and one kind of probe,
//! when a probe may run ([`ProbeState::gate`]), how consecutive outcomes turn
//! into a result through `successThreshold` and `failureThreshold`
//! ([`ProbeState::record`]), and what a probe does ([`probe_action`]) and how
//! often ([`probe_timing`]). Pure; the shell ([`super::manager`]) runs the probes.
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which of a container's three probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Readiness,
    Liveness,
    Startup,
}

impl ProbeKind {
    /// The three kinds.
    pub const ALL: [ProbeKind; 3] = [Self::Readiness, Self::Liveness, Self::Startup];

    /// The container's probe of this kind, if it has one.
    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            Self::Readiness => container.readiness_probe.as_ref(),
            Self::Liveness => container.liveness_probe.as_ref(),
            Self::Startup => container.startup_probe.as_ref(),
        }
    }

    /// The result before the first probe (the kubelet's `initialValue`): not
    /// ready, alive, and not known to have started. `None` is unknown.
    fn initial_result(self) -> Option<bool> {
        match self {
            Self::Readiness => Some(false),
            Self::Liveness => Some(true),
            Self::Startup => None,
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Readiness => "Readiness",
            Self::Liveness => "Liveness",
            Self::Startup => "Startup",
        })
    }
}

/// What one run of a probe said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// The container answered wrong; the message is what the kubelet puts in
    /// its `Unhealthy` event (e.g. "HTTP probe failed with statuscode: 500").
    Failure(String),
    /// A success the kubelet warns about with a `ProbeWarning` event (an HTTP
    /// probe that ended on a redirect it did not follow); the message follows
    /// "Readiness probe warning: ".
    Warning(String),
    /// The probe could not be run (no pod IP yet, runtime error, unsupported
    /// probe): like the kubelet, the outcome is thrown away.
    Unknown,
}

/// How often and how patiently a probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// No probe before this long after the container started.
    pub initial_delay: Duration,
    /// Between two probes (default 10 s).
    pub period: Duration,
    /// For one probe to answer (default 1 s).
    pub timeout: Duration,
}

const DEFAULT_PERIOD_SECONDS: i32 = 10;
const DEFAULT_TIMEOUT_SECONDS: i32 = 1;
const DEFAULT_SUCCESS_THRESHOLD: i32 = 1;
const DEFAULT_FAILURE_THRESHOLD: i32 = 3;

/// `value` if set and positive, else `default` (the API server defaults these
/// fields, but a static or hand-made pod may leave them out).
fn positive_or(value: Option<i32>, default: i32) -> u32 {
    value.filter(|v| *v > 0).unwrap_or(default).unsigned_abs()
}

/// The probe's initial delay, period and timeout, with the API's defaults.
pub fn probe_timing(probe: &Probe) -> Timing {
    Timing {
        initial_delay: Duration::from_secs(
            probe
                .initial_delay_seconds
                .unwrap_or(0)
                .max(0)
                .unsigned_abs() as u64,
        ),
        period: Duration::from_secs(
            positive_or(probe.period_seconds, DEFAULT_PERIOD_SECONDS) as u64
        ),
        timeout: Duration::from_secs(
            positive_or(probe.timeout_seconds, DEFAULT_TIMEOUT_SECONDS) as u64
        ),
    }
}

/// Whether a probe runs now (see [`ProbeState::gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Run the probe.
    Probe,
    /// The container started less than `initialDelaySeconds` ago; this much is left.
    InitialDelay(Duration),
    /// Nothing to do until something changes: waiting for the startup probe,
    /// startup already succeeded, or a liveness/startup failure waits for the
    /// container to be replaced.
    Hold,
}

/// The threshold state machine of one probe of one container.
#[derive(Debug, Clone)]
pub struct ProbeState {
    kind: ProbeKind,
    success_threshold: u32,
    failure_threshold: u32,
    initial_delay: Duration,
    /// The container instance the state is about; a new instance starts over.
    container_id: Option<String>,
    /// `None`: unknown (a startup probe that has not decided yet).
    result: Option<bool>,
    /// The last definite outcome and how many times in a row it came.
    last: Option<bool>,
    run: u32,
    /// After a liveness or startup failure the container is going to be
    /// killed: no more probes until a new instance shows up.
    on_hold: bool,
    last_failure: Option<String>,
}

impl ProbeState {
    /// A probe that has not run yet: readiness fails (not ready), liveness
    /// succeeds, startup is unknown (not started).
    pub fn new(kind: ProbeKind, probe: &Probe) -> Self {
        let success_threshold = match kind {
            // The API requires 1 for these; a larger value would only delay a verdict.
            ProbeKind::Liveness | ProbeKind::Startup => 1,
            ProbeKind::Readiness => positive_or(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
        };
        Self {
            kind,
            success_threshold,
            failure_threshold: positive_or(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
            initial_delay: probe_timing(probe).initial_delay,
            container_id: None,
            result: kind.initial_result(),
            last: None,
            run: 0,
            on_hold: false,
            last_failure: None,
        }
    }

    /// The kind of probe.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The current result: `Some(true)` ready / alive / started, `Some(false)`
    /// not ready / dead / failed to start, `None` not known yet (startup only).
    pub fn result(&self) -> Option<bool> {
        self.result
    }

    /// The message of the latest failed probe of the current container.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// The container instance the state is about.
    pub fn container_id(&self) -> Option<&str> {
        self.container_id.as_deref()
    }

    /// Tells which container instance is running. A different instance than
    /// before (the container restarted) starts over from the initial result;
    /// returns whether that happened.
    pub fn observe_container(&mut self, id: &str) -> bool {
        match self.container_id.as_deref() {
            Some(known) if known == id => false,
            None => {
                self.container_id = Some(id.to_string());
                false
            }
            Some(_) => {
                *self = Self {
                    container_id: Some(id.to_string()),
                    result: self.kind.initial_result(),
                    last: None,
                    run: 0,
                    on_hold: false,
                    last_failure: None,
                    ..self.clone()
                };
                true
            }
        }
    }

    /// Whether to probe now, `since_start` after the container started.
    /// `started`: the container's startup probe has succeeded (true for a
    /// container without one). Readiness and liveness wait for it; a startup
    /// probe stops once it succeeded.
    pub fn gate(&self, since_start: Duration, started: bool) -> Gate {
        if self.on_hold {
            return Gate::Hold;
        }
        if since_start < self.initial_delay {
            return Gate::InitialDelay(self.initial_delay - since_start);
        }
        let waiting_for = match self.kind {
            ProbeKind::Startup => started || self.result == Some(true),
            ProbeKind::Readiness | ProbeKind::Liveness => !started,
        };
        if waiting_for {
            Gate::Hold
        } else {
            Gate::Probe
        }
    }

    /// Counts one outcome; returns the new result when it changes. The result
    /// changes only after `successThreshold` successes or `failureThreshold`
    /// failures in a row; an unknown outcome counts for nothing. After a
    /// liveness or startup failure the state holds (see [`Gate::Hold`]) and
    /// ignores outcomes until [`ProbeState::observe_container`] sees a new
    /// container.
    pub fn record(&mut self, outcome: ProbeOutcome) -> Option<bool> {
        if self.on_hold {
            return None;
        }
        let success = match outcome {
            ProbeOutcome::Success | ProbeOutcome::Warning(_) => true,
            ProbeOutcome::Failure(message) => {
                self.last_failure = Some(message);
                false
            }
            ProbeOutcome::Unknown => return None,
        };
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        if !success && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            self.on_hold = true;
            self.run = 0;
        }
        if self.result == Some(success) {
            return None;
        }
        self.result = Some(success);
        Some(success)
    }
}

/// `http` or `https` (an `httpGet` probe's `scheme`, default HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpScheme {
    Http,
    Https,
}

impl HttpScheme {
    /// `http` or `https`, as in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// What a probe does, with its port resolved against the container's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Run a command in the container; exit code 0 is success.
    Exec { command: Vec<String> },
    /// GET `path`; 200 <= status < 400 is success. `host` defaults to the pod IP.
    Http {
        scheme: HttpScheme,
        host: Option<String>,
        port: u16,
        /// Always starts with `/`; may carry a query.
        path: String,
        /// In the order given; a name may repeat.
        headers: Vec<(String, String)>,
    },
    /// Open a TCP connection; `host` defaults to the pod IP.
    Tcp { host: Option<String>, port: u16 },
    /// gRPC health checking protocol (`grpc.health.v1.Health/Check`).
    Grpc { port: u16, service: Option<String> },
}

/// What `probe` does for `container`. Errs when the probe has no handler, an
/// exec probe has no command, or a port is not a valid port number nor the
/// name of one of the container's ports.
pub fn probe_action(probe: &Probe, container: &Container) -> Result<ProbeAction, String> {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec probe has no command".to_string());
        }
        return Ok(ProbeAction::Exec { command });
    }
    if let Some(http) = &probe.http_get {
        let scheme = match http
            .scheme
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("http") => HttpScheme::Http,
            Some("https") => HttpScheme::Https,
            Some(other) => return Err(format!("unsupported HTTP probe scheme {other:?}")),
        };
        // `protocol` (HTTP/2 over cleartext) is newer than this prober: HTTP/1.1 only.
        if let Some(protocol) = http.protocol.as_deref().filter(|p| !p.is_empty()) {
            if !protocol.eq_ignore_ascii_case("HTTP/1.1") {
                return Err(format!("HTTP probe protocol {protocol:?} is not supported"));
            }
        }
        let path = http.path.as_deref().unwrap_or_default();
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        return Ok(ProbeAction::Http {
            scheme,
            host: non_empty(&http.host),
            port: resolve_port(&http.port, container)?,
            path,
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        });
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Ok(ProbeAction::Tcp {
            host: non_empty(&tcp.host),
            port: resolve_port(&tcp.port, container)?,
        });
    }
    if let Some(grpc) = &probe.grpc {
        return Ok(ProbeAction::Grpc {
            port: port_number(i64::from(grpc.port))?,
            service: non_empty(&grpc.service),
        });
    }
    Err(format!(
        "probe of container {:?} has no handler (exec, httpGet, tcpSocket or grpc)",
        container.name
    ))
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

/// A probe's port: a number, the name of one of the container's ports, or
/// (as the kubelet accepts) a number written as a string.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => port_number(i64::from(*number)),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()));
            match (named, name.parse::<i64>()) {
                (Some(p), _) => port_number(i64::from(p.container_port)),
                (None, Ok(number)) => port_number(number),
                (None, Err(_)) => Err(format!(
                    "port {name:?} is not a port of container {:?}",
                    container.name
                )),
            }
        }
    }
}

fn port_number(number: i64) -> Result<u16, String> {
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerPort, ExecAction, GRPCAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
    };

    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    fn fail() -> ProbeOutcome {
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    }

    #[test]
    fn initial_results_are_not_ready_alive_and_not_started() {
        let p = Probe::default();
        assert_eq!(
            ProbeState::new(ProbeKind::Readiness, &p).result(),
            Some(false)
        );
        assert_eq!(
            ProbeState::new(ProbeKind::Liveness, &p).result(),
            Some(true)
        );
        assert_eq!(ProbeState::new(ProbeKind::Startup, &p).result(), None);
    }

    #[test]
    fn readiness_flips_after_thresholds_of_outcomes_in_a_row() {
        let mut s = ProbeState::new(ProbeKind::Readiness, &probe(2, 3));
        assert_eq!(s.record(ProbeOutcome::Success), None, "1 of 2 successes");
        assert_eq!(s.record(ProbeOutcome::Success), Some(true));
        assert_eq!(s.record(ProbeOutcome::Success), None, "no flip while ready");
        assert_eq!(s.record(fail()), None);
        assert_eq!(s.record(fail()), None);
        assert_eq!(
            s.record(ProbeOutcome::Success),
            None,
            "a success breaks the run"
        );
        assert_eq!(s.record(fail()), None);
        assert_eq!(s.record(fail()), None);
        assert_eq!(s.record(fail()), Some(false), "3 failures in a row");
        assert_eq!(
            s.last_failure(),
            Some("HTTP probe failed with statuscode: 500")
        );
        // Readiness keeps probing after a failure.
        assert_eq!(s.gate(Duration::from_secs(60), true), Gate::Probe);
        assert_eq!(s.record(ProbeOutcome::Success), None);
        assert_eq!(s.record(ProbeOutcome::Success), Some(true));
    }

    #[test]
    fn unknown_outcomes_count_for_nothing() {
        let mut s = ProbeState::new(ProbeKind::Readiness, &probe(2, 3));
        s.record(ProbeOutcome::Success);
        assert_eq!(s.record(ProbeOutcome::Unknown), None);
        assert_eq!(
            s.record(ProbeOutcome::Success),
            Some(true),
            "run not broken"
        );
    }

    #[test]
    fn warnings_count_as_successes() {
        let mut s = ProbeState::new(ProbeKind::Readiness, &probe(2, 3));
        let warning = || ProbeOutcome::Warning("Probe terminated redirects".into());
        assert_eq!(s.record(warning()), None);
        assert_eq!(s.record(ProbeOutcome::Success), Some(true));
        s.record(fail());
        assert_eq!(s.record(warning()), None, "a warning breaks a failure run");
    }

    #[test]
    fn thresholds_default_to_one_success_and_three_failures() {
        let mut s = ProbeState::new(ProbeKind::Readiness, &Probe::default());
        assert_eq!(s.record(ProbeOutcome::Success), Some(true));
        assert_eq!(s.record(fail()), None);
        assert_eq!(s.record(fail()), None);
        assert_eq!(s.record(fail()), Some(false));
    }

    #[test]
    fn startup_needs_one_success_whatever_the_threshold_says() {
        let mut s = ProbeState::new(ProbeKind::Startup, &probe(5, 3));
        assert_eq!(s.record(ProbeOutcome::Success), Some(true));
    }

    #[test]
    fn liveness_failure_holds_until_the_container_is_replaced() {
        let mut s = ProbeState::new(ProbeKind::Liveness, &probe(1, 2));
        assert!(!s.observe_container("c1"));
        assert_eq!(s.record(fail()), None);
        assert_eq!(s.record(fail()), Some(false));
        assert_eq!(s.gate(Duration::from_secs(60), true), Gate::Hold);
        assert_eq!(
            s.record(ProbeOutcome::Success),
            None,
            "ignored while on hold"
        );
        assert_eq!(s.result(), Some(false), "keeps reporting the failure");
        assert!(!s.observe_container("c1"), "same container: still on hold");
        assert_eq!(s.result(), Some(false));
        assert!(s.observe_container("c2"), "restarted");
        assert_eq!(s.result(), Some(true));
        assert_eq!(s.last_failure(), None);
        assert_eq!(s.gate(Duration::from_secs(60), true), Gate::Probe);
        assert_eq!(s.record(fail()), None, "the failure run starts over");
    }

    #[test]
    fn readiness_resets_to_not_ready_on_a_new_container() {
        let mut s = ProbeState::new(ProbeKind::Readiness, &Probe::default());
        s.observe_container("c1");
        assert_eq!(s.record(ProbeOutcome::Success), Some(true));
        assert!(s.observe_container("c2"));
        assert_eq!(s.result(), Some(false));
        assert_eq!(s.container_id(), Some("c2"));
    }

    #[test]
    fn startup_failure_past_threshold_marks_a_restart_and_holds() {
        let mut s = ProbeState::new(ProbeKind::Startup, &probe(1, 2));
        s.observe_container("c1");
        assert_eq!(s.gate(Duration::ZERO, false), Gate::Probe);
        assert_eq!(s.record(fail()), None, "1 of 2");
        assert_eq!(s.result(), None, "still unknown");
        assert_eq!(s.record(fail()), Some(false));
        assert_eq!(s.gate(Duration::from_secs(60), false), Gate::Hold);
        assert!(s.observe_container("c2"));
        assert_eq!(s.result(), None, "new container: not started");
        assert_eq!(s.gate(Duration::ZERO, false), Gate::Probe);
    }

    #[test]
    fn startup_stops_probing_once_it_succeeded() {
        let mut s = ProbeState::new(ProbeKind::Startup, &Probe::default());
        assert_eq!(s.record(ProbeOutcome::Success), Some(true));
        assert_eq!(s.gate(Duration::from_secs(60), true), Gate::Hold);
    }

    #[test]
    fn readiness_and_liveness_wait_for_the_startup_probe() {
        for kind in [ProbeKind::Readiness, ProbeKind::Liveness] {
            let s = ProbeState::new(kind, &Probe::default());
            assert_eq!(s.gate(Duration::from_secs(60), false), Gate::Hold, "{kind}");
            assert_eq!(s.gate(Duration::from_secs(60), true), Gate::Probe, "{kind}");
        }
    }

    #[test]
    fn nothing_runs_before_the_initial_delay() {
        let p = Probe {
            initial_delay_seconds: Some(5),
            ..Probe::default()
        };
        for kind in ProbeKind::ALL {
            let s = ProbeState::new(kind, &p);
            assert_eq!(
                s.gate(Duration::from_secs(2), kind != ProbeKind::Startup),
                Gate::InitialDelay(Duration::from_secs(3)),
                "{kind}"
            );
            assert_eq!(
                s.gate(Duration::from_secs(5), kind != ProbeKind::Startup),
                Gate::Probe,
                "{kind}"
            );
        }
    }

    #[test]
    fn timing_defaults_and_values() {
        assert_eq!(
            probe_timing(&Probe::default()),
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
            }
        );
        let p = Probe {
            initial_delay_seconds: Some(3),
            period_seconds: Some(2),
            timeout_seconds: Some(5),
            ..Probe::default()
        };
        assert_eq!(
            probe_timing(&p),
            Timing {
                initial_delay: Duration::from_secs(3),
                period: Duration::from_secs(2),
                timeout: Duration::from_secs(5),
            }
        );
        let zero = Probe {
            period_seconds: Some(0),
            timeout_seconds: Some(0),
            ..Probe::default()
        };
        assert_eq!(probe_timing(&zero).period, Duration::from_secs(10));
        assert_eq!(probe_timing(&zero).timeout, Duration::from_secs(1));
    }

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![
                ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..ContainerPort::default()
                },
                ContainerPort {
                    container_port: 9090,
                    ..ContainerPort::default()
                },
            ]),
            ..Container::default()
        }
    }

    fn http_probe(port: IntOrString, path: Option<&str>) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: path.map(str::to_string),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        }
    }

    #[test]
    fn http_action_resolves_named_ports_and_defaults() {
        let action = probe_action(
            &http_probe(IntOrString::String("http".into()), None),
            &container(),
        );
        assert_eq!(
            action,
            Ok(ProbeAction::Http {
                scheme: HttpScheme::Http,
                host: None,
                port: 8080,
                path: "/".into(),
                headers: vec![],
            })
        );
        let p = Probe {
            http_get: Some(HTTPGetAction {
                scheme: Some("HTTPS".into()),
                host: Some("10.0.0.9".into()),
                port: IntOrString::Int(8443),
                path: Some("healthz?full=1".into()),
                http_headers: Some(vec![
                    HTTPHeader {
                        name: "X-A".into(),
                        value: "1".into(),
                    },
                    HTTPHeader {
                        name: "X-A".into(),
                        value: "2".into(),
                    },
                ]),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_action(&p, &container()),
            Ok(ProbeAction::Http {
                scheme: HttpScheme::Https,
                host: Some("10.0.0.9".into()),
                port: 8443,
                path: "/healthz?full=1".into(),
                headers: vec![("X-A".into(), "1".into()), ("X-A".into(), "2".into())],
            })
        );
    }

    #[test]
    fn ports_written_as_strings_are_numbers_when_no_port_has_that_name() {
        let p = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("9090".into()),
                host: Some(String::new()),
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_action(&p, &container()),
            Ok(ProbeAction::Tcp {
                host: None,
                port: 9090
            })
        );
    }

    #[test]
    fn unknown_port_names_and_invalid_numbers_are_errors() {
        let err = probe_action(
            &http_probe(IntOrString::String("metrics".into()), None),
            &container(),
        )
        .expect_err("no such port");
        assert!(
            err.contains("\"metrics\"") && err.contains("\"app\""),
            "{err}"
        );
        for bad in [0, -1, 65536] {
            let err = probe_action(&http_probe(IntOrString::Int(bad), None), &container())
                .expect_err("invalid");
            assert_eq!(err, format!("invalid port number: {bad}"));
        }
    }

    #[test]
    fn exec_grpc_and_missing_handlers() {
        let exec = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["cat".into(), "/tmp/healthy".into()]),
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_action(&exec, &container()),
            Ok(ProbeAction::Exec {
                command: vec!["cat".into(), "/tmp/healthy".into()]
            })
        );
        let empty = Probe {
            exec: Some(ExecAction { command: None }),
            ..Probe::default()
        };
        assert!(probe_action(&empty, &container()).is_err());
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 50051,
                service: Some(String::new()),
                ..GRPCAction::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_action(&grpc, &container()),
            Ok(ProbeAction::Grpc {
                port: 50051,
                service: None
            })
        );
        let err = probe_action(&Probe::default(), &container()).expect_err("no handler");
        assert!(err.contains("no handler"), "{err}");
    }
}
