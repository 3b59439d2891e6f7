//! The key pair of a `podCertificate` projection and the proof that the
//! node holds it, as the kubelet's `generateKeyAndProof`: a fresh key of the
//! projection's `keyType` and a stub PKCS#10 request (empty subject, no
//! extensions) signed with it, which the API server checks before it lets
//! the PodCertificateRequest in. The key goes to the pod as PKCS#8
//! (`PRIVATE KEY`) PEM.
//!
//! rcgen on ring makes ECDSA P-256 and P-384 and Ed25519 keys; ring cannot
//! generate RSA keys or sign with P-521, so `RSA3072`, `RSA4096` and
//! `ECDSAP521` are refused with an error the pod's FailedMount events show.
use crate::pods::volumes::trust_bundles::encode_pem;

/// A new key (PKCS#8 PEM) and the stub CSR (DER) proving it.
pub fn generate_key_and_proof(key_type: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let alg = match key_type {
        "ECDSAP256" => &rcgen::PKCS_ECDSA_P256_SHA256,
        "ECDSAP384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        "ED25519" => &rcgen::PKCS_ED25519,
        "RSA3072" | "RSA4096" | "ECDSAP521" => {
            return Err(format!(
                "while generating keypair: key type {key_type:?} is not supported by this node"
            ))
        }
        other => {
            return Err(format!(
                "while generating keypair: unknown key type {other:?}"
            ))
        }
    };
    let key = rcgen::KeyPair::generate_for(alg)
        .map_err(|e| format!("while generating {key_type} key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("while generating stub PKCS#10 request: {e}"))?;
    let key_pem = encode_pem("PRIVATE KEY", &key.serialize_der()).into_bytes();
    Ok((key_pem, csr.der().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn each_supported_key_type_gives_a_pkcs8_key_and_a_csr_with_an_empty_subject() {
        for key_type in ["ECDSAP256", "ECDSAP384", "ED25519"] {
            let (key_pem, csr) = generate_key_and_proof(key_type).unwrap();
            let text = String::from_utf8(key_pem).unwrap();
            assert!(
                text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "{key_type}"
            );
            let (_, req) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&csr)
                    .unwrap();
            assert_eq!(req.certification_request_info.subject.iter().count(), 0);
        }
        assert!(generate_key_and_proof("RSA3072")
            .unwrap_err()
            .contains("not supported"));
        assert!(generate_key_and_proof("DSA")
            .unwrap_err()
            .contains("unknown key type"));
    }
}
