//! Kubernetes resource quantities (`100m`, `1.5Gi`, `1e3`) as exact amounts,
//! and a container's requests and limits read through them.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;

/// An exact quantity in billionths of its unit (the API server's finest
/// precision; finer digits round up, as the API server rounds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Amount {
    nanos: i128,
}

impl Amount {
    /// Parses the quantity syntax: a signed decimal number followed by a
    /// binary suffix (`Ki`…`Ei`), a decimal suffix (`n`, `u`, `m`, `k`, `M`,
    /// `G`, `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`).
    pub fn parse(text: &str) -> Option<Amount> {
        let text = text.trim();
        let number_len = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(number_len);
        let (negative, digits) = match number.as_bytes().first() {
            Some(b'-') => (true, &number[1..]),
            Some(b'+') => (false, &number[1..]),
            _ => (false, number),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
            return None;
        }
        let (binary_shift, decimal_exponent) = suffix_scale(suffix)?;
        let mantissa: i128 = format!("{whole}{fraction}").parse().ok()?;
        // mantissa * 10^(exponent - fraction digits) * 2^shift, in nanos.
        let exponent = decimal_exponent + 9 - i32::try_from(fraction.len()).ok()?;
        let mut numerator = mantissa.checked_mul(1i128.checked_shl(binary_shift)?)?;
        let mut denominator = 1i128;
        if exponent >= 0 {
            numerator = numerator.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?;
        } else {
            denominator = 10i128.checked_pow(exponent.unsigned_abs())?;
        }
        let nanos = ceil_div(numerator, denominator);
        Some(Amount {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// Parses an API quantity.
    pub fn of(quantity: &Quantity) -> Option<Amount> {
        Amount::parse(&quantity.0)
    }

    /// A whole number of units.
    pub fn from_units(units: i64) -> Amount {
        Amount {
            nanos: i128::from(units) * NANOS_PER_UNIT,
        }
    }

    /// Thousandths of a unit (millicores for cpu).
    pub fn from_milli(milli: i64) -> Amount {
        Amount {
            nanos: i128::from(milli) * NANOS_PER_MILLI,
        }
    }

    /// Thousandths, rounded up (the API machinery's `MilliValue`).
    pub fn milli_ceil(self) -> i64 {
        saturate(ceil_div(self.nanos, NANOS_PER_MILLI))
    }

    /// Whole units, rounded up (the API machinery's `Value`).
    pub fn value_ceil(self) -> i64 {
        saturate(ceil_div(self.nanos, NANOS_PER_UNIT))
    }
}

impl std::ops::Add for Amount {
    type Output = Amount;

    fn add(self, other: Amount) -> Amount {
        Amount {
            nanos: self.nanos.saturating_add(other.nanos),
        }
    }
}

/// (power of two, power of ten) a suffix multiplies by.
fn suffix_scale(suffix: &str) -> Option<(u32, i32)> {
    Some(match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let exponent: i32 = exponent.parse().ok()?;
            if exponent.unsigned_abs() > 30 {
                return None;
            }
            (0, exponent)
        }
    })
}

fn ceil_div(numerator: i128, denominator: i128) -> i128 {
    -((-numerator).div_euclid(denominator))
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// The container's limits that parse.
pub fn limits(container: &Container) -> BTreeMap<String, Amount> {
    parsed(container.resources.as_ref().and_then(|r| r.limits.as_ref()))
}

/// The container's requests, a missing one defaulting to its limit as the
/// API server defaults it (so hand-made Pods read as stored ones).
pub fn requests(container: &Container) -> BTreeMap<String, Amount> {
    let mut requests = limits(container);
    requests.extend(parsed(
        container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref()),
    ));
    requests
}

fn parsed(list: Option<&BTreeMap<String, Quantity>>) -> BTreeMap<String, Amount> {
    list.into_iter()
        .flatten()
        .filter_map(|(name, q)| Some((name.clone(), Amount::of(q)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(text: &str) -> Option<i64> {
        Amount::parse(text).map(Amount::milli_ceil)
    }

    fn value(text: &str) -> Option<i64> {
        Amount::parse(text).map(Amount::value_ceil)
    }

    #[test]
    fn parses_every_suffix_form() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("0.5"), Some(500));
        assert_eq!(milli(".25"), Some(250));
        assert_eq!(milli("2.5m"), Some(3), "finer than a milli rounds up");
        assert_eq!(value("128Mi"), Some(128 << 20));
        assert_eq!(value("1.5Gi"), Some(3 << 29));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1k"), Some(1000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("1E3"), Some(1000));
        assert_eq!(value("2E"), Some(2_000_000_000_000_000_000));
        assert_eq!(milli("5e-3"), Some(5));
        assert_eq!(value("1500u"), Some(1));
        assert_eq!(value("-1"), Some(-1));
        assert_eq!(value("+7"), Some(7));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in [
            "", "m", "1.2.3", "1Kb", "1KiB", "abc", "1e", "1e+", "--1", "1 Gi",
        ] {
            assert_eq!(Amount::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_default_to_limits() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "500m"}}
        }))
        .unwrap();
        let requests = requests(&container);
        assert_eq!(requests["cpu"].milli_ceil(), 500);
        assert_eq!(requests["memory"].value_ceil(), 1 << 30);
    }
}
