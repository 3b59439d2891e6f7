//! The TLS client of HTTPS probes, as the kubelet's prober makes it
//! (`pkg/probe/http`, `tls.Config{InsecureSkipVerify: true}`): a real
//! handshake, whose signatures are checked against the certificate the server
//! sent, but no check of that certificate's chain, name or dates. A pod's
//! serving certificate is usually self-signed or issued for a Service name,
//! never for the pod IP the probe dials, so verifying it would fail every probe.
//!
//! ```text
//! TcpStream -> [ connect(host) ] -> TlsStream (ALPN http/1.1) -> hyper http1
//! ```
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Opens TLS on `stream` to `host` (an IP address or a DNS name, sent as
/// SNI when it is a name). The error reads as Go's `tls:` errors do in the
/// kubelet's messages.
pub async fn connect(stream: TcpStream, host: &str) -> Result<TlsStream<TcpStream>, String> {
    let name = server_name(host)?;
    TlsConnector::from(probe_client_config())
        .connect(name, stream)
        .await
        .map_err(|error| format!("tls: {error}"))
}

/// The name the handshake is for: an IP address (no SNI) or a DNS name.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_string())
        .map_err(|error| format!("invalid host {host:?}: {error}"))
}

/// One client configuration for every probe (building it loads the provider's
/// algorithms; the handshake state lives in each connection).
pub fn probe_client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyServerCertificate(provider.clone()));
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(verifier)
                        .with_no_client_auth()
                })
                // ring's default provider supports TLS 1.2 and 1.3; this cannot fail.
                .unwrap_or_else(|error| panic!("TLS probe client configuration: {error}"));
            // The probe speaks HTTP/1.1 (the kubelet would negotiate h2 if offered;
            // every server that speaks h2 over TLS also speaks HTTP/1.1).
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// Accepts any server certificate, as `InsecureSkipVerify` does, while still
/// checking that the server holds the certificate's key (the handshake
/// signatures), so a broken TLS server still fails the probe.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
