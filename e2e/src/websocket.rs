//! A websocket read of `pods/log` through the API server, as the upstream
//! conformance test's `OpenWebSocketForURL` does it: one HTTP/1.1 upgrade
//! with the `binary.k8s.io` protocol, then the log as websocket messages until
//! the server closes. The client speaks just enough of RFC 6455 to read what
//! the server sends (it sends nothing but the handshake).

use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{admin_kubeconfig, state_dir};

/// A TLS client of the API server with the admin's client certificate.
pub struct ApiWebsocket {
    connector: tokio_rustls::TlsConnector,
    /// `host:port` of the API server.
    address: String,
    host: String,
}

impl ApiWebsocket {
    /// From the running cluster's admin kubeconfig and PKI.
    pub fn admin() -> anyhow::Result<Self> {
        let config = kube::config::Kubeconfig::read_from(admin_kubeconfig())?;
        let server = config
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .context("no server in the admin kubeconfig")?;
        let address = server
            .strip_prefix("https://")
            .context("the API server is not https")?
            .trim_end_matches('/')
            .to_string();
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(h, _)| h)
            .to_string();
        let pki = state_dir().join("pki");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
            roots.add(cert?)?;
        }
        let chain =
            CertificateDer::pem_file_iter(pki.join("admin.crt"))?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(pki.join("admin.key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(ApiWebsocket {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            address,
            host,
        })
    }

    /// Everything the server sends in binary or text messages on a websocket
    /// opened at `path_and_query` (with the `binary.k8s.io` protocol), until it
    /// closes. Fails when the upgrade is refused.
    pub async fn read_all(&self, path_and_query: &str) -> anyhow::Result<Vec<u8>> {
        let tcp = TcpStream::connect(&self.address).await?;
        let name = ServerName::try_from(self.host.clone())?;
        let mut tls = self.connector.connect(name, tcp).await?;
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: bm9kZWNvbmZpZy1lMmUtd3M=\r\n\
             Sec-WebSocket-Protocol: binary.k8s.io\r\n\r\n",
            self.address
        );
        tls.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if tls.read(&mut byte).await? == 0 {
                bail!(
                    "connection closed in the response head: {:?}",
                    String::from_utf8_lossy(&head)
                );
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        if !head.starts_with("HTTP/1.1 101") {
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
            bail!("upgrade refused: {head}{}", String::from_utf8_lossy(&rest));
        }
        read_messages(&mut tls).await
    }
}

/// The payloads of data frames until a close frame or the end of the stream.
async fn read_messages<R: AsyncRead + Unpin>(stream: &mut R) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut start = [0u8; 2];
        match stream.read_exact(&mut start).await {
            Ok(_) => {}
            // The server may close without a close frame (or a TLS close_notify).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(e.into()),
        }
        let opcode = start[0] & 0x0f;
        let masked = start[1] & 0x80 != 0;
        let len = match start[1] & 0x7f {
            126 => u64::from(stream.read_u16().await?),
            127 => stream.read_u64().await?,
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        if masked {
            stream.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; usize::try_from(len)?];
        stream.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            // Continuation, text, binary.
            0..=2 => out.extend_from_slice(&payload),
            8 => return Ok(out),
            // Ping and pong carry no log.
            _ => {}
        }
    }
}
