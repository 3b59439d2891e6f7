//! Events about pods, with the kubelet's reasons and wording, so that
//! `kubectl describe pod` and `kubectl get events` read as they would on a
//! kubelet's node (reporting controller `kubelet`, instance the node name).
//! Publishing never delays a sync: events go through a bounded queue to one
//! sender task (as the kubelet's event broadcaster), so a burst of pods
//! starting does not also become a burst of concurrent writes to the API
//! server; when the queue is full, events are dropped (and counted in the log).
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

/// Events waiting for the sender; beyond this, new ones are dropped.
const QUEUE: usize = 1000;

/// Sends the pod workers' events.
#[derive(Clone)]
pub struct PodEvents {
    tx: tokio::sync::mpsc::Sender<(Event, ObjectReference)>,
}

impl std::fmt::Debug for PodEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodEvents").finish_non_exhaustive()
    }
}

impl PodEvents {
    pub fn new(client: Client, node_name: &str) -> Self {
        let reporter = Reporter {
            controller: "kubelet".into(),
            instance: Some(node_name.to_string()),
        };
        let recorder = Recorder::new(client, reporter);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Event, _)>(QUEUE);
        tokio::spawn(async move {
            while let Some((event, reference)) = rx.recv().await {
                if let Err(err) = recorder.publish(&event, &reference).await {
                    tracing::debug!(reason = %event.reason, error = %err, "cannot publish an event");
                }
            }
        });
        Self { tx }
    }

    /// A `Normal` event about `pod`, or about one of its containers (named
    /// in the reference's `fieldPath` as the kubelet does, which also keeps
    /// the events of two containers apart).
    pub fn normal(&self, pod: &Pod, container: Option<&str>, reason: &str, note: String) {
        self.send(pod, container, EventType::Normal, reason, note);
    }

    /// A `Warning` event about `pod` or one of its containers.
    pub fn warning(&self, pod: &Pod, container: Option<&str>, reason: &str, note: String) {
        self.send(pod, container, EventType::Warning, reason, note);
    }

    fn send(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let mut reference = pod.object_ref(&());
        reference.field_path = container.map(|name| container_field_path(pod, name));
        self.queue(reference, type_, reason, note);
    }

    /// An event about an object already referenced (`warning` picks the type).
    pub fn send_about(
        &self,
        reference: ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.queue(reference, type_, reason, note);
    }

    fn queue(&self, reference: ObjectReference, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note, 1024)),
            action: action(reason).to_string(),
            secondary: None,
        };
        if self.tx.try_send((event, reference)).is_err() {
            tracing::debug!(reason, "event queue full or closed; event dropped");
        }
    }
}

/// `spec.containers{name}` or `spec.initContainers{name}`.
fn container_field_path(pod: &Pod, name: &str) -> String {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == name));
    let list = if init {
        "initContainers"
    } else if crate::pods::ephemeral::is_ephemeral(pod, name) {
        "ephemeralContainers"
    } else {
        "containers"
    };
    format!("spec.{list}{{{name}}}")
}

/// The events.k8s.io `action` for one of the kubelet's reasons.
fn action(reason: &str) -> &'static str {
    match reason {
        "Pulling" | "Pulled" | "Failed" | "BackOff" | "ErrImageNeverPull" => "Sync",
        "Killing" => "Kill",
        "FailedMount" => "Mount",
        _ => "Sync",
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_events_name_the_container_as_the_kubelet() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "web"}]}
        }))
        .unwrap();
        assert_eq!(container_field_path(&pod, "web"), "spec.containers{web}");
        assert_eq!(
            container_field_path(&pod, "setup"),
            "spec.initContainers{setup}"
        );
    }

    #[test]
    fn notes_are_cut_to_what_the_api_server_takes_on_a_char_boundary() {
        let long = "é".repeat(600);
        let cut = truncate(long, 1024);
        assert!(cut.len() <= 1024 && cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short".into(), 1024), "short");
    }
}
