//! The TLS configuration of the kubelet server.
//!
//! Serving certificate: PEM files when given (the kubelet's `--tls-cert-file` and
//! `--tls-private-key-file`), else a self-signed one for the node's name and
//! addresses made at start, as the kubelet makes one when it has none. The API
//! server here does not verify it (no `--kubelet-certificate-authority`).
//!
//! Client certificates are asked for but optional (a client may authenticate with a
//! bearer token instead); one that is sent must chain to the client CA bundle (the
//! kubelet's `--client-ca-file`, the cluster CA), or the handshake fails.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum ServingCert {
    /// PEM files: the certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// Made at start: self-signed for the node's name and addresses.
    SelfSigned {
        node_name: String,
        addresses: Vec<IpAddr>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {origin}: {source}")]
    Read {
        what: &'static str,
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {what} {origin}: {source}")]
    Pem {
        what: &'static str,
        origin: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in {what} {origin}")]
    NoCertificate { what: &'static str, origin: String },
    #[error("cannot use the client CA bundle {origin}: {reason}")]
    ClientCa { origin: String, reason: String },
    #[error("cannot generate the self-signed serving certificate for node {node}: {source}")]
    Generate {
        node: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid serving certificate or key: {0}")]
    Config(#[source] rustls::Error),
}

/// The server's TLS configuration: `serving` certificate, client certificates
/// verified against the PEM bundle at `client_ca_file` when presented.
pub fn server_config(
    serving: &ServingCert,
    client_ca_file: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = match serving {
        ServingCert::Files { cert, key } => {
            let origin = cert.display().to_string();
            let chain = parse_certs(
                "serving certificate",
                &origin,
                &read("serving certificate", cert)?,
            )?;
            let key = parse_key(&key.display().to_string(), &read("serving key", key)?)?;
            (chain, key)
        }
        ServingCert::SelfSigned {
            node_name,
            addresses,
        } => self_signed(node_name, addresses)?,
    };
    let origin = client_ca_file.display().to_string();
    let client_cas = parse_certs(
        "client CA bundle",
        &origin,
        &read("client CA bundle", client_ca_file)?,
    )?;
    build(chain, key, client_cas, &origin)
}

/// The configuration from in-memory PEM (tests, or certificates held elsewhere).
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = parse_certs("serving certificate", "(in memory)", cert_pem)?;
    let key = parse_key("(in memory)", key_pem)?;
    let client_cas = parse_certs("client CA bundle", "(in memory)", client_ca_pem)?;
    build(chain, key, client_cas, "(in memory)")
}

/// A self-signed serving certificate for the node's name (also as DNS name) and addresses.
pub fn self_signed(
    node_name: &str,
    addresses: &[IpAddr],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let err = |source| TlsError::Generate {
        node: node_name.to_string(),
        source,
    };
    let mut names = vec![node_name.to_string()];
    // rcgen takes a name that parses as an IP address as an IP SAN.
    names.extend(addresses.iter().map(IpAddr::to_string));
    let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node_name}@nodeconfig"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((vec![cert.der().clone()], key))
}

/// Assembles the configuration from DER parts.
fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_cas: Vec<CertificateDer<'static>>,
    client_ca_origin: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let ca_error = |reason: String| TlsError::ClientCa {
        origin: client_ca_origin.to_string(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in client_cas {
        roots.add(ca).map_err(|e| ca_error(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ca_error(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    // HTTP/1.1 only: exec's SPDY and WebSocket upgrades need it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        origin: path.display().to_string(),
        source,
    })
}

fn parse_certs(
    what: &'static str,
    origin: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            origin: origin.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            origin: origin.to_string(),
        });
    }
    Ok(certs)
}

fn parse_key(origin: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsError::Pem {
        what: "serving key",
        origin: origin.to_string(),
        source,
    })
}
