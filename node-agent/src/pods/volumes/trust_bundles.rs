//! What a `clusterTrustBundle` projection writes, after the kubelet's
//! `pkg/kubelet/clustertrustbundle` manager. Pure: the shell lists the
//! ClusterTrustBundles once, these functions pick and join them.
//!
//! - By `name`: that bundle's certificates; a missing bundle is an error
//!   unless `optional`, then the file is empty.
//! - By `signerName` and `labelSelector`: every bundle of that signer whose
//!   labels match; a nil selector matches nothing and an empty one matches
//!   everything (`metav1.LabelSelectorAsSelector`). No match is an error
//!   unless `optional`, then the file is empty.
//!
//! The certificates are joined as the kubelet's `normalizeTrustAnchors`: every
//! PEM block of the chosen bundles, de-duplicated by content and written back
//! as `CERTIFICATE` blocks in Go's `pem.EncodeToMemory` layout. The kubelet
//! shuffles them so that nobody relies on an order; here they are sorted by
//! their DER bytes, so an unchanged set of bundles gives an unchanged file and
//! the volume is not rewritten on every sync.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::ClusterTrustBundleProjection;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The content of the projection's file, or why the volume cannot be set up
/// (the kubelet's error text).
pub fn trust_anchors(
    bundles: &[ClusterTrustBundle],
    projection: &ClusterTrustBundleProjection,
) -> Result<Vec<u8>, String> {
    let optional = projection.optional.unwrap_or(false);
    if let Some(name) = &projection.name {
        return match bundles.iter().find(|b| b.metadata.name.as_ref() == Some(name)) {
            Some(bundle) => Ok(normalize([bundle])),
            None if optional => Ok(Vec::new()),
            None => Err(format!(
                "while getting ClusterTrustBundle: clustertrustbundles.certificates.k8s.io {name:?} not found"
            )),
        };
    }
    let Some(signer) = &projection.signer_name else {
        return Err(
            "ClusterTrustBundle projection requires either name or signerName to be set".into(),
        );
    };
    let selector = projection.label_selector.as_ref();
    let mut chosen = Vec::new();
    for bundle in bundles {
        if bundle.spec.signer_name.as_deref().unwrap_or_default() != signer {
            continue;
        }
        let labels = bundle.metadata.labels.clone().unwrap_or_default();
        if selector_matches(selector, &labels)? {
            chosen.push(bundle);
        }
    }
    if chosen.is_empty() {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(
                "combination of signerName and labelSelector matched zero ClusterTrustBundles"
                    .into(),
            )
        };
    }
    Ok(normalize(chosen))
}

/// Whether `labels` match the selector, as `metav1.LabelSelectorAsSelector`:
/// `None` matches nothing, an empty selector everything. An invalid selector
/// (an unknown operator, `In`/`NotIn` without values, `Exists`/`DoesNotExist`
/// with values) is an error.
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let Some(selector) = selector else {
        return Ok(false);
    };
    let mut matches = true;
    for (key, value) in selector.match_labels.iter().flatten() {
        matches &= labels.get(key) == Some(value);
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "while parsing label selector: values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty (key {:?})",
                    expr.key
                ))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "while parsing label selector: values: Invalid value: {values:?}: values set must be empty for exists and does not exist (key {:?})",
                    expr.key
                ))
            }
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(format!(
                    "while parsing label selector: {other:?} is not a valid label selector operator"
                ))
            }
        };
        matches &= ok;
    }
    Ok(matches)
}

/// Every PEM block of the bundles, de-duplicated, as CERTIFICATE blocks.
fn normalize<'a>(bundles: impl IntoIterator<Item = &'a ClusterTrustBundle>) -> Vec<u8> {
    let mut anchors = BTreeSet::new();
    for bundle in bundles {
        anchors.extend(pem_blocks(&bundle.spec.trust_bundle));
    }
    anchors
        .iter()
        .flat_map(|der| encode_pem("CERTIFICATE", der).into_bytes())
        .collect()
}

/// The contents of every PEM block in `text`, whatever its type, in order;
/// text between blocks and blocks that do not decode are skipped (Go's
/// `pem.Decode` in a loop). Header lines (`Key: value`) are ignored.
pub fn pem_blocks(text: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(kind) = line
            .trim_end()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {kind}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                closed = true;
                break;
            }
            if !line.contains(':') {
                body.push_str(line);
            }
        }
        if !closed {
            break;
        }
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            blocks.push(der);
        }
    }
    blocks
}

/// One PEM block as Go's `pem.EncodeToMemory` writes it: base64 in lines of
/// 64 characters, `\n` line ends.
pub fn encode_pem(kind: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {kind}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {kind}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pem_of(der: &[u8]) -> String {
        encode_pem("CERTIFICATE", der)
    }

    fn bundle(
        name: &str,
        signer: &str,
        labels: serde_json::Value,
        pems: &[&[u8]],
    ) -> ClusterTrustBundle {
        let text: String = pems.iter().map(|d| pem_of(d)).collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"signerName": signer, "trustBundle": text},
        }))
        .unwrap()
    }

    fn projection(value: serde_json::Value) -> ClusterTrustBundleProjection {
        serde_json::from_value(value).unwrap()
    }

    fn bundles() -> Vec<ClusterTrustBundle> {
        vec![
            bundle("plain", "", json!({}), &[b"zero"]),
            bundle(
                "one:a",
                "x.io/one",
                json!({"alive": "true"}),
                &[b"one-a", b"shared"],
            ),
            bundle(
                "one:b",
                "x.io/one",
                json!({"alive": "false"}),
                &[b"one-b", b"shared"],
            ),
            bundle("two:a", "x.io/two", json!({"alive": "true"}), &[b"two-a"]),
        ]
    }

    fn pems(ders: &[&[u8]]) -> Vec<u8> {
        ders.iter().flat_map(|d| pem_of(d).into_bytes()).collect()
    }

    #[test]
    fn a_bundle_by_name_or_an_empty_file_when_optional_and_missing() {
        let b = bundles();
        let by_name = projection(json!({"name": "plain", "path": "ca.pem"}));
        assert_eq!(trust_anchors(&b, &by_name).unwrap(), pems(&[b"zero"]));
        let missing = projection(json!({"name": "nope", "path": "ca.pem"}));
        assert!(trust_anchors(&b, &missing)
            .unwrap_err()
            .contains("not found"));
        let optional = projection(json!({"name": "nope", "path": "ca.pem", "optional": true}));
        assert_eq!(trust_anchors(&b, &optional).unwrap(), b"");
    }

    #[test]
    fn by_signer_the_selector_picks_bundles_and_certificates_are_joined_once_sorted() {
        let b = bundles();
        let alive = projection(json!({
            "signerName": "x.io/one", "path": "ca.pem",
            "labelSelector": {"matchLabels": {"alive": "true"}},
        }));
        assert_eq!(
            trust_anchors(&b, &alive).unwrap(),
            pems(&[b"one-a", b"shared"])
        );
        let everything = projection(json!({
            "signerName": "x.io/one", "path": "ca.pem", "labelSelector": {},
        }));
        assert_eq!(
            trust_anchors(&b, &everything).unwrap(),
            pems(&[b"one-a", b"one-b", b"shared"])
        );
        let not_in = projection(json!({
            "signerName": "x.io/one", "path": "ca.pem",
            "labelSelector": {"matchExpressions": [{"key": "alive", "operator": "NotIn", "values": ["true"]}]},
        }));
        assert_eq!(
            trust_anchors(&b, &not_in).unwrap(),
            pems(&[b"one-b", b"shared"])
        );
    }

    #[test]
    fn a_nil_selector_matches_nothing_and_no_match_fails_unless_optional() {
        let b = bundles();
        let nil = projection(json!({"signerName": "x.io/one", "path": "ca.pem"}));
        assert_eq!(
            trust_anchors(&b, &nil).unwrap_err(),
            "combination of signerName and labelSelector matched zero ClusterTrustBundles"
        );
        let nil_optional =
            projection(json!({"signerName": "x.io/one", "path": "ca.pem", "optional": true}));
        assert_eq!(trust_anchors(&b, &nil_optional).unwrap(), b"");
        let neither = projection(json!({"path": "ca.pem"}));
        assert!(trust_anchors(&b, &neither)
            .unwrap_err()
            .contains("either name or signerName"));
    }

    #[test]
    fn selector_operators_and_invalid_selectors() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        let check = |v| selector_matches(Some(&sel(v)), &labels);
        assert!(check(
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]})
        )
        .unwrap());
        assert!(check(json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]})).unwrap());
        assert!(
            !check(json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}))
                .unwrap()
        );
        assert!(check(
            json!({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["1"]}]})
        )
        .unwrap());
        assert!(!check(json!({"matchLabels": {"a": "1", "b": "2"}})).unwrap());
        assert!(check(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})).is_err());
        assert!(check(
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["0"]}]})
        )
        .is_err());
    }

    #[test]
    fn pem_blocks_skip_text_and_headers_and_encode_as_go_does() {
        let der: Vec<u8> = (0..100u8).collect();
        let text = format!(
            "junk\n{}more junk\n-----BEGIN X-----\nProc-Type: 4\n\nAAEC\n-----END X-----\n",
            pem_of(&der)
        );
        assert_eq!(pem_blocks(&text), vec![der.clone(), vec![0, 1, 2]]);
        let encoded = pem_of(&der);
        let lines: Vec<&str> = encoded.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert!(encoded.ends_with("-----\n"));
    }
}
