//! Projected volume sources of `certificates.k8s.io`, end to end (`e2e/cluster
//! up`): a pod reads the ClusterTrustBundles its `clusterTrustBundle` sources
//! pick (by name, by signer and labels) and sees them change; a
//! `podCertificate` source makes the node create a PodCertificateRequest,
//! which this test signs as the signer would, and the pod gets its key and
//! the issued chain.
//!
//! Each test works in its own namespace and signer name, and deletes the
//! cluster-scoped bundles it made.

use std::time::{Duration, Instant, SystemTime};

use nodeconfig_e2e::kubectl::{eventually, get_json, kubectl};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::pod::{await_pod, running_and_ready, BUSYBOX};
use serde_json::{json, Value};

/// Pod created to Running and Ready, with images already on the nodes.
const STARTED: Duration = Duration::from_secs(90);
/// A change of a bundle reaches a running pod's file with the next volume
/// refresh (every 60 s, as the kubelet's sync).
const PROPAGATED: Duration = Duration::from_secs(150);

/// A busybox pod that sleeps with one projected volume at `/creds`.
fn pod_with_sources(ns: &str, name: &str, sources: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "creds", "mountPath": "/creds"}],
            }],
            "volumes": [{"name": "creds", "projected": {"sources": sources}}],
        },
    })
}

fn read(ns: &str, pod: &str, path: &str) -> String {
    kubectl(&["exec", "-n", ns, pod, "-c", "main", "--", "cat", path]).expect_ok("cat in the pod")
}

/// A self-signed CA certificate, PEM.
fn ca_pem(name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    ca_params(name).self_signed(&key).unwrap().pem()
}

fn ca_params(name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
}

/// The base64 body of each PEM block, so certificates compare whatever the
/// line endings.
fn bodies(pem: &str) -> Vec<String> {
    pem.split("-----END CERTIFICATE-----")
        .filter_map(|block| block.split("-----BEGIN CERTIFICATE-----").nth(1))
        .map(|body| body.split_whitespace().collect())
        .collect()
}

/// ClusterTrustBundles deleted when the test ends.
struct Bundles(Vec<String>);

impl Bundles {
    fn apply(&mut self, name: &str, signer: Option<&str>, labels: Value, pems: &[&str]) {
        let mut spec = json!({"trustBundle": pems.concat()});
        if let Some(signer) = signer {
            spec["signerName"] = json!(signer);
        }
        apply_json(json!({
            "apiVersion": "certificates.k8s.io/v1", "kind": "ClusterTrustBundle",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }));
        if !self.0.iter().any(|n| n == name) {
            self.0.push(name.to_string());
        }
    }
}

impl Drop for Bundles {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = kubectl(&["delete", "clustertrustbundle", name, "--wait=false"]);
        }
    }
}

#[test]
fn a_pod_reads_the_trust_bundles_it_selects_and_sees_them_change() {
    let ns = Namespace::new("ctb");
    let signer = format!("nodeconfig.test/{}", ns.0);
    let prefix = signer.replace('/', ":");
    let (plain, alive, dead, late) = (
        ca_pem("plain"),
        ca_pem("alive"),
        ca_pem("dead"),
        ca_pem("late"),
    );
    let mut bundles = Bundles(Vec::new());
    let plain_name = format!("{}-plain", ns.0);
    bundles.apply(&plain_name, None, json!({}), &[&plain]);
    let alive_name = format!("{prefix}:alive");
    bundles.apply(
        &alive_name,
        Some(&signer),
        json!({"alive": "true"}),
        &[&alive],
    );
    let dead_name = format!("{prefix}:dead");
    bundles.apply(
        &dead_name,
        Some(&signer),
        json!({"alive": "false"}),
        &[&dead],
    );

    let sources = json!([
        {"clusterTrustBundle": {"name": plain_name, "path": "plain.pem"}},
        {"clusterTrustBundle": {"signerName": signer, "path": "alive.pem",
            "labelSelector": {"matchLabels": {"alive": "true"}}}},
        {"clusterTrustBundle": {"signerName": signer, "path": "all.pem", "labelSelector": {}}},
        // No selector matches nothing; optional, so the file is empty.
        {"clusterTrustBundle": {"signerName": signer, "path": "none.pem", "optional": true}},
        {"clusterTrustBundle": {"name": "no-such-bundle", "path": "missing.pem", "optional": true}},
    ]);
    apply_json(pod_with_sources(&ns.0, "reader", sources));
    await_pod(
        &ns.0,
        "reader",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );

    assert_eq!(
        bodies(&read(&ns.0, "reader", "/creds/plain.pem")),
        bodies(&plain)
    );
    assert_eq!(
        bodies(&read(&ns.0, "reader", "/creds/alive.pem")),
        bodies(&alive)
    );
    let mut both = bodies(&alive);
    both.extend(bodies(&dead));
    both.sort();
    let mut all = bodies(&read(&ns.0, "reader", "/creds/all.pem"));
    all.sort();
    assert_eq!(all, both);
    assert_eq!(read(&ns.0, "reader", "/creds/none.pem"), "");
    assert_eq!(read(&ns.0, "reader", "/creds/missing.pem"), "");

    // A certificate added to a selected bundle, and a bundle deleted, reach
    // the running pod.
    bundles.apply(
        &alive_name,
        Some(&signer),
        json!({"alive": "true"}),
        &[&alive, &late],
    );
    kubectl(&["delete", "clustertrustbundle", &dead_name]).expect_ok("delete a bundle");
    let started = Instant::now();
    let mut want = bodies(&alive);
    want.extend(bodies(&late));
    want.sort();
    eventually(PROPAGATED, "the changed bundles in the pod", || {
        let mut all = bodies(&read(&ns.0, "reader", "/creds/all.pem"));
        all.sort();
        (all == want).then_some(())
    });
    println!("bundle changes in the pod after {:.1?}", started.elapsed());
    let mut alive_now = bodies(&read(&ns.0, "reader", "/creds/alive.pem"));
    alive_now.sort();
    assert_eq!(alive_now, want);
}

/// RFC 3339 of a Unix time in seconds.
fn rfc3339(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap()
        .to_string()
}

/// Signs the request as a signer would: a leaf for the proven key, valid
/// for an hour from now, with the pod's name as a DNS name.
fn issue(ns: &str, pcr: &Value, ca: &rcgen::Issuer<'_, rcgen::KeyPair>, ca_pem: &str) {
    use k8s_openapi::ByteString;
    let name = pcr["metadata"]["name"].as_str().unwrap();
    let stub: ByteString =
        serde_json::from_value(pcr["spec"]["stubPKCS10Request"].clone()).unwrap();
    // from_der checks the proof of possession: the request is signed with
    // the key it names.
    let mut csr = rcgen::CertificateSigningRequestParams::from_der(&stub.0.into())
        .expect("the stub PKCS#10 request parses and its signature verifies");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (not_before, not_after) = (now - 60, now - 60 + 3600);
    csr.params.not_before =
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before as u64);
    csr.params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after as u64);
    csr.params.subject_alt_names = vec![rcgen::SanType::DnsName(
        pcr["spec"]["podName"].as_str().unwrap().try_into().unwrap(),
    )];
    let leaf = csr.signed_by(ca).unwrap();
    let status = json!({"status": {
        "certificateChain": format!("{}{}", leaf.pem(), ca_pem),
        "notBefore": rfc3339(not_before),
        "notAfter": rfc3339(not_after),
        "beginRefreshAt": rfc3339(not_before + 1800),
        "conditions": [{
            "type": "Issued", "status": "True", "reason": "Issued",
            "message": "issued by the e2e test", "lastTransitionTime": rfc3339(now),
        }],
    }});
    kubectl(&[
        "patch",
        "podcertificaterequest",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])
    .expect_ok("issue the PodCertificateRequest");
}

#[test]
fn a_pod_certificate_is_requested_by_the_node_and_written_once_issued() {
    let ns = Namespace::new("podcert");
    let signer = format!("nodeconfig.test/{}-pods", ns.0);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params("pod signer").self_signed(&ca_key).unwrap();
    let ca_pem = ca_cert.pem();
    let ca = rcgen::Issuer::new(ca_params("pod signer"), ca_key);

    let sources = json!([{"podCertificate": {
        "signerName": signer, "keyType": "ECDSAP256",
        "credentialBundlePath": "bundle.pem", "keyPath": "tls.key",
        "certificateChainPath": "chain.pem",
        "userAnnotations": {"example.test/purpose": "e2e"},
    }}]);
    apply_json(pod_with_sources(&ns.0, "holder", sources));

    // The node asks for a certificate for the pod.
    let pcr = eventually(STARTED, "a PodCertificateRequest for the pod", || {
        let run = kubectl(&["get", "podcertificaterequests", "-n", &ns.0, "-o", "json"]);
        let list: Value = serde_json::from_str(&run.stdout).ok()?;
        list["items"].as_array()?.first().cloned()
    });
    let pod = get_json("pod", "holder", Some(&ns.0)).unwrap();
    let spec = &pcr["spec"];
    assert_eq!(spec["signerName"], signer.as_str());
    assert_eq!(spec["podName"], "holder");
    assert_eq!(spec["podUID"], pod["metadata"]["uid"]);
    assert_eq!(spec["nodeName"], pod["spec"]["nodeName"]);
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(
        spec["unverifiedUserAnnotations"],
        json!({"example.test/purpose": "e2e"})
    );
    assert_eq!(
        pcr["metadata"]["ownerReferences"][0]["uid"],
        pod["metadata"]["uid"]
    );
    // Until the signer answers, the pod cannot start.
    assert_ne!(
        get_json("pod", "holder", Some(&ns.0)).unwrap()["status"]["phase"],
        "Running"
    );

    issue(&ns.0, &pcr, &ca, &ca_pem);
    await_pod(
        &ns.0,
        "holder",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );

    let key = read(&ns.0, "holder", "/creds/tls.key");
    let chain = read(&ns.0, "holder", "/creds/chain.pem");
    let bundle = read(&ns.0, "holder", "/creds/bundle.pem");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
    assert_eq!(bundle, format!("{key}{chain}"));
    let chain_bodies = bodies(&chain);
    assert_eq!(chain_bodies.len(), 2, "leaf and CA: {chain}");
    assert_eq!(chain_bodies[1..], bodies(&ca_pem)[..]);
    // The leaf certifies the key the pod holds.
    let key_pair = rcgen::KeyPair::from_pem(&key).unwrap();
    let leaf_der = {
        use k8s_openapi::ByteString;
        let quoted = json!(chain_bodies[0]);
        serde_json::from_value::<ByteString>(quoted).unwrap().0
    };
    let public = key_pair.public_key_raw();
    assert!(
        leaf_der.windows(public.len()).any(|w| w == public),
        "the leaf holds the pod's public key"
    );
}
