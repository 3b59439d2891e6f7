//! The downward API's values, as the kubelet renders them into files: pod
//! fields (`fieldRef`) and container resources (`resourceFieldRef`). Pure.
//!
//! Labels and annotations are one `key="value"` line per entry, sorted by key,
//! the value quoted as Go's `%q` does (the kubelet's `fieldpath.FormatMap`).
//! Resources are divided by the divisor and rounded up; a limit the container
//! does not set is the node's allocatable, as the kubelet reports it.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The value of a `fieldRef` in a downwardAPI volume: `metadata.name`,
/// `metadata.namespace`, `metadata.uid`, `metadata.labels`,
/// `metadata.annotations`, and one entry as `metadata.labels['key']`.
pub fn pod_field(pod: &Pod, field_path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    if let Some((map, key)) = subscript(field_path) {
        let entries = match map {
            "metadata.labels" => &meta.labels,
            "metadata.annotations" => &meta.annotations,
            _ => return Err(format!("unsupported fieldPath: {field_path}")),
        };
        return Ok(entries
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    match field_path {
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        "metadata.labels" => Ok(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Ok(format_map(meta.annotations.as_ref())),
        _ => Err(format!("unsupported fieldPath: {field_path}")),
    }
}

/// `metadata.labels['app']` → (`metadata.labels`, `app`).
fn subscript(field_path: &str) -> Option<(&str, &str)> {
    let (map, rest) = field_path.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((map, key))
}

/// One `key="value"` line per entry, sorted by key, no trailing newline.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string quoted as Go's `strconv.Quote` (`%q`) writes it.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() && (c as u32) <= 0xffff => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef`: `limits.` or `requests.` of `cpu`,
/// `memory`, `ephemeral-storage` or `hugepages-*`, of the named container
/// (regular or init), divided by the divisor (default 1) and rounded up.
pub fn container_resource(
    pod: &Pod,
    selector: &ResourceFieldSelector,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, String> {
    let container_name = selector.container_name.as_deref().unwrap_or_default();
    let container = find_container(pod, container_name)
        .ok_or_else(|| format!("container {container_name} not found"))?;
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .filter(|(kind, resource)| {
            matches!(*kind, "limits" | "requests")
                && (matches!(*resource, "cpu" | "memory" | "ephemeral-storage")
                    || resource.starts_with("hugepages-"))
        })
        .ok_or_else(|| format!("unsupported container resource: {}", selector.resource))?;
    let resources = container.resources.as_ref();
    let set = |list: Option<&BTreeMap<String, Quantity>>| {
        list.and_then(|l| l.get(resource))
            .map(|q| parse_nanos(&q.0))
            .transpose()
            .map(|v| v.filter(|v| *v != 0))
    };
    let amount = if kind == "limits" {
        // The kubelet's MergeContainerResourceLimits: an unset limit is the node's allocatable.
        match set(resources.and_then(|r| r.limits.as_ref()))? {
            Some(v) => v,
            None if matches!(resource, "cpu" | "memory" | "ephemeral-storage") => {
                match node_allocatable.get(resource) {
                    Some(q) => parse_nanos(&q.0)?,
                    None => return Err(format!("node allocatable {resource} is not known")),
                }
            }
            None => 0,
        }
    } else {
        set(resources.and_then(|r| r.requests.as_ref()))?.unwrap_or(0)
    };
    let divisor = match selector
        .divisor
        .as_ref()
        .map(|q| parse_nanos(&q.0))
        .transpose()?
    {
        Some(d) if d != 0 => d,
        _ => NANO,
    };
    let value = if resource == "cpu" {
        // CPU in millicores, as the kubelet divides MilliValue by MilliValue.
        ceil_div(ceil_div(amount, MICRO), ceil_div(divisor, MICRO).max(1))
    } else {
        ceil_div(ceil_div(amount, NANO), ceil_div(divisor, NANO).max(1))
    };
    Ok(value.to_string())
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Nano-units per unit, and per milli-unit.
const NANO: i128 = 1_000_000_000;
const MICRO: i128 = 1_000_000;

fn ceil_div(a: i128, b: i128) -> i128 {
    if a >= 0 {
        (a + b - 1) / b
    } else {
        a / b
    }
}

/// A Kubernetes quantity (`500m`, `1.5Gi`, `2e3`) in nano-units, rounded up.
fn parse_nanos(text: &str) -> Result<i128, String> {
    let bad = || format!("invalid quantity {text:?}");
    let text = text.trim();
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().map_err(|_| bad())?;
    // value = mantissa * 10^(exp10 - frac digits) * 2^exp2
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => (s[1..].parse().map_err(|_| bad())?, 0),
        _ => return Err(bad()),
    };
    let scale = exp10 - frac_part.len() as i32 + 9;
    let scaled = if scale >= 0 {
        10i128
            .checked_pow(scale as u32)
            .and_then(|p| mantissa.checked_mul(p))
    } else {
        10i128
            .checked_pow((-scale) as u32)
            .map(|p| ceil_div(mantissa, p))
            .or(Some(if mantissa > 0 { 1 } else { 0 }))
    };
    scaled
        .and_then(|v| v.checked_mul(1i128 << exp2))
        .map(|v| sign * v)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1",
                "labels": {"tier": "front", "app": "web"},
                "annotations": {"note": "say \"hi\"\nbye"},
            },
            "spec": {"containers": [{
                "name": "app",
                "resources": {
                    "limits": {"memory": "64Mi"},
                    "requests": {"cpu": "250m", "memory": "1.5Gi"},
                },
            }]},
        }))
        .unwrap()
    }

    fn resource(resource: &str, divisor: Option<&str>) -> Result<String, String> {
        let selector = ResourceFieldSelector {
            container_name: Some("app".into()),
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
        };
        let allocatable = BTreeMap::from([("cpu".to_string(), Quantity("2".into()))]);
        container_resource(&pod(), &selector, &allocatable)
    }

    #[test]
    fn labels_are_sorted_quoted_lines() {
        assert_eq!(
            pod_field(&pod(), "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"front\""
        );
        assert_eq!(
            pod_field(&pod(), "metadata.annotations").unwrap(),
            "note=\"say \\\"hi\\\"\\nbye\""
        );
        assert_eq!(
            pod_field(&pod(), "metadata.labels['tier']").unwrap(),
            "front"
        );
        assert_eq!(pod_field(&pod(), "metadata.labels['none']").unwrap(), "");
        assert_eq!(pod_field(&pod(), "metadata.uid").unwrap(), "u-1");
        assert!(pod_field(&pod(), "status.podIP").is_err());
    }

    #[test]
    fn resources_are_divided_and_rounded_up() {
        assert_eq!(resource("requests.cpu", None).unwrap(), "1");
        assert_eq!(resource("requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(resource("requests.memory", Some("1Mi")).unwrap(), "1536");
        assert_eq!(resource("limits.memory", None).unwrap(), "67108864");
        // No CPU limit: the node's allocatable.
        assert_eq!(resource("limits.cpu", Some("1m")).unwrap(), "2000");
        assert!(resource("limits.ephemeral-storage", None).is_err());
        assert!(resource("limits.gpu", None).is_err());
    }

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(parse_nanos("1").unwrap(), NANO);
        assert_eq!(parse_nanos("100m").unwrap(), NANO / 10);
        assert_eq!(parse_nanos("1Ki").unwrap(), 1024 * NANO);
        assert_eq!(parse_nanos("1.5k").unwrap(), 1500 * NANO);
        assert_eq!(parse_nanos("2e3").unwrap(), 2000 * NANO);
        assert!(parse_nanos("1Qi").is_err());
        assert!(parse_nanos("").is_err());
    }
}
