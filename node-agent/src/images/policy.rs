//! The image garbage collection policy from NodeConfig `spec.pods`, checked
//! as the kubelet checks its configuration (`validation.go`).

use std::time::Duration;

use nodeconfig_crds::duration::parse_duration;
use nodeconfig_crds::PodsSpec;

/// When images are collected and which are old enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Collect when the image filesystem is at least this full (percent).
    pub high_threshold_percent: u8,
    /// ... down to this (percent).
    pub low_threshold_percent: u8,
    /// An image the agent first saw less than this long ago stays.
    pub min_age: Duration,
    /// An image unused this long goes whatever the usage; `None`: off.
    pub max_age: Option<Duration>,
}

impl Default for GcPolicy {
    /// The kubelet's defaults: 85 %, 80 %, 2 minutes, no maximum age.
    fn default() -> Self {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            max_age: None,
        }
    }
}

impl GcPolicy {
    /// Whether collection runs at all: the kubelet stops it when the high
    /// threshold is 100 and there is no maximum age.
    pub fn enabled(&self) -> bool {
        self.high_threshold_percent < 100 || self.max_age.is_some()
    }

    /// The policy `pods` asks for, or what is wrong with it, one problem per
    /// rule (`imageGCHighThresholdPercent 120 must be ...`).
    pub fn from_spec(pods: &PodsSpec) -> Result<GcPolicy, Vec<String>> {
        let mut problems = Vec::new();
        let mut percent = |name: &str, value: i32| match u8::try_from(value) {
            Ok(p) if p <= 100 => p,
            _ => {
                problems.push(format!("{name} {value} must be between 0 and 100"));
                0
            }
        };
        let high = percent(
            "imageGCHighThresholdPercent",
            pods.image_gc_high_threshold_percent,
        );
        let low = percent(
            "imageGCLowThresholdPercent",
            pods.image_gc_low_threshold_percent,
        );
        if problems.is_empty() && low >= high {
            problems.push(format!(
                "imageGCLowThresholdPercent {low} must be less than imageGCHighThresholdPercent {high}"
            ));
        }
        let mut age = |name: &str, example: &str, value: &str| match parse_duration(value) {
            Ok(d) => Some(d),
            Err(_) => {
                problems.push(format!(
                    "{name} {value:?} must be a duration such as {example}"
                ));
                None
            }
        };
        let min_age = age("imageMinimumGCAge", "2m or 0s", &pods.image_minimum_gc_age);
        let max_age = age(
            "imageMaximumGCAge",
            "24h, or 0s for off",
            &pods.image_maximum_gc_age,
        );
        if let (Some(min), Some(max)) = (min_age, max_age) {
            if !max.is_zero() && max <= min {
                problems.push(format!(
                    "imageMaximumGCAge {:?} must be 0s (off) or longer than imageMinimumGCAge {:?}",
                    pods.image_maximum_gc_age, pods.image_minimum_gc_age
                ));
            }
        }
        match (min_age, max_age) {
            (Some(min_age), Some(max_age)) if problems.is_empty() => Ok(GcPolicy {
                high_threshold_percent: high,
                low_threshold_percent: low,
                min_age,
                max_age: (!max_age.is_zero()).then_some(max_age),
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(high: i32, low: i32, min: &str, max: &str) -> PodsSpec {
        PodsSpec {
            image_gc_high_threshold_percent: high,
            image_gc_low_threshold_percent: low,
            image_minimum_gc_age: min.into(),
            image_maximum_gc_age: max.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_are_the_kubelets() {
        let policy = GcPolicy::from_spec(&PodsSpec::default()).unwrap();
        assert_eq!(policy, GcPolicy::default());
        assert!(policy.enabled());
    }

    #[test]
    fn durations_are_read_and_a_zero_maximum_age_is_off() {
        let policy = GcPolicy::from_spec(&spec(90, 70, "0s", "1h30m")).unwrap();
        assert_eq!(policy.min_age, Duration::ZERO);
        assert_eq!(policy.max_age, Some(Duration::from_secs(5400)));
        assert_eq!(
            GcPolicy::from_spec(&spec(90, 70, "1s", "0s"))
                .unwrap()
                .max_age,
            None
        );
    }

    #[test]
    fn a_high_threshold_of_100_without_maximum_age_turns_collection_off() {
        assert!(!GcPolicy::from_spec(&spec(100, 80, "2m", "0s"))
            .unwrap()
            .enabled());
        assert!(GcPolicy::from_spec(&spec(100, 80, "2m", "24h"))
            .unwrap()
            .enabled());
    }

    #[test]
    fn every_broken_rule_is_named() {
        let problems = GcPolicy::from_spec(&spec(120, -1, "soon", "0s")).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("imageGCHighThresholdPercent 120"));
        assert!(problems[1].starts_with("imageGCLowThresholdPercent -1"));
        assert!(problems[2].starts_with("imageMinimumGCAge \"soon\""));
        let problems = GcPolicy::from_spec(&spec(80, 80, "2m", "1m")).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("must be less than imageGCHighThresholdPercent 80"));
        assert!(problems[1].starts_with("imageMaximumGCAge \"1m\" must be 0s (off) or longer"));
    }
}
