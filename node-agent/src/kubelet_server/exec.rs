//! Exec, attach and port-forward: the query's options, and the CRI call that
//! returns the streaming URL to proxy to.

use k8s_cri::v1 as cri;

use crate::edge::cri::{CriClient, CriError};

/// The streams a client asks for (`stdin`, `stdout`, `stderr`, `tty` in the query).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A query the kubelet refuses with 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidStreamRequest(pub String);

impl StreamOptions {
    /// Reads the options as the kubelet does: the API server names the
    /// streams `input`, `output` and `error` (core/v1's ExecStdinParam...)
    /// and sends `1` for true; `stdin`/`stdout`/`stderr` are accepted too.
    pub fn from_query(query: &[(String, String)]) -> Result<Self, InvalidStreamRequest> {
        let flag = |names: &[&str]| {
            query.iter().any(|(k, v)| {
                names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True" | "TRUE")
            })
        };
        let mut options = StreamOptions {
            stdin: flag(&["input", "stdin"]),
            stdout: flag(&["output", "stdout"]),
            stderr: flag(&["error", "stderr"]),
            tty: flag(&["tty"]),
        };
        if !(options.stdin || options.stdout || options.stderr) {
            return Err(InvalidStreamRequest(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        // A terminal merges stderr into stdout; the kubelet drops stderr too.
        if options.tty && options.stderr {
            options.stderr = false;
        }
        Ok(options)
    }
}

/// The `command` parameters, in order.
pub fn exec_command(query: &[(String, String)]) -> Result<Vec<String>, InvalidStreamRequest> {
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(InvalidStreamRequest("missing command".into()));
    }
    Ok(command)
}

/// The `port` parameters of a port-forward request (WebSocket clients send them;
/// SPDY clients name the port per stream instead).
pub fn forwarded_ports(query: &[(String, String)]) -> Result<Vec<i32>, InvalidStreamRequest> {
    query
        .iter()
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| match v.parse::<u16>() {
            Ok(port) if port > 0 => Ok(i32::from(port)),
            _ => Err(InvalidStreamRequest(format!("invalid port {v:?}"))),
        })
        .collect()
}

/// CRI `Exec`: the URL where the runtime serves this exec session.
pub async fn exec_url(
    cri: &mut CriClient,
    container_id: &str,
    command: Vec<String>,
    streams: StreamOptions,
) -> Result<String, CriError> {
    let request = cri::ExecRequest {
        container_id: container_id.to_string(),
        cmd: command,
        tty: streams.tty,
        stdin: streams.stdin,
        stdout: streams.stdout,
        stderr: streams.stderr,
    };
    match cri.runtime.exec(request).await {
        Ok(response) => Ok(response.into_inner().url),
        Err(status) => Err(cri.call_error("Exec", status)),
    }
}

/// CRI `Attach`: the URL where the runtime attaches to the container's streams.
pub async fn attach_url(
    cri: &mut CriClient,
    container_id: &str,
    streams: StreamOptions,
) -> Result<String, CriError> {
    let request = cri::AttachRequest {
        container_id: container_id.to_string(),
        stdin: streams.stdin,
        tty: streams.tty,
        stdout: streams.stdout,
        stderr: streams.stderr,
    };
    match cri.runtime.attach(request).await {
        Ok(response) => Ok(response.into_inner().url),
        Err(status) => Err(cri.call_error("Attach", status)),
    }
}

/// CRI `PortForward`: the URL where the runtime forwards into the pod's sandbox.
pub async fn port_forward_url(
    cri: &mut CriClient,
    sandbox_id: &str,
    ports: Vec<i32>,
) -> Result<String, CriError> {
    let request = cri::PortForwardRequest {
        pod_sandbox_id: sandbox_id.to_string(),
        port: ports,
    };
    match cri.runtime.port_forward(request).await {
        Ok(response) => Ok(response.into_inner().url),
        Err(status) => Err(cri.call_error("PortForward", status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_as_the_api_server_sends_them() {
        let query = q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("input", "1"),
            ("output", "1"),
            ("tty", "1"),
            ("error", "1"),
        ]);
        assert_eq!(exec_command(&query).unwrap(), ["sh", "-c", "echo hi"]);
        let options = StreamOptions::from_query(&query).unwrap();
        assert_eq!(
            options,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            },
            "a terminal has no separate stderr"
        );
    }

    #[test]
    fn refuses_requests_without_streams_or_command() {
        assert!(StreamOptions::from_query(&q(&[("tty", "1")])).is_err());
        assert_eq!(
            StreamOptions::from_query(&q(&[("stdout", "1")])).map(|o| o.stdout),
            Ok(true),
            "the stream names of the kubelet's own clients work too"
        );
        assert!(exec_command(&q(&[("stdout", "1")])).is_err());
        assert_eq!(
            forwarded_ports(&q(&[("port", "80"), ("port", "8080")])).unwrap(),
            [80, 8080]
        );
        assert!(forwarded_ports(&q(&[("port", "0")])).is_err());
    }
}
