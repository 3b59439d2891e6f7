//! Where a pod's [`PodAllocation`] lives on the node: `resize-state.json`
//! in the pod's directory (`<root-dir>/pods/<uid>`), written whole through
//! a temporary file and a rename, so an agent restart finds what it had
//! allocated and applied (the kubelet's `allocated_pods_state` and
//! `actuated_pods_state` checkpoints). The directory goes when the pod does.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::pods::resize::PodAllocation;

/// The file's name in the pod's directory.
pub const STATE_FILE: &str = "resize-state.json";

fn path(pod_dir: &Path) -> PathBuf {
    pod_dir.join(STATE_FILE)
}

/// The allocation kept for the pod, if any (an unreadable file counts as none).
pub fn load(pod_dir: &Path) -> Option<PodAllocation> {
    let text = fs::read(path(pod_dir)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(allocation) => Some(allocation),
        Err(err) => {
            tracing::warn!(path = %path(pod_dir).display(), error = %err, "unreadable resize state; starting from the spec");
            None
        }
    }
}

/// Writes the allocation for the pod.
pub fn save(pod_dir: &Path, allocation: &PodAllocation) -> io::Result<()> {
    fs::create_dir_all(pod_dir)?;
    let text = serde_json::to_vec(allocation).map_err(io::Error::other)?;
    let tmp = pod_dir.join(format!(".{STATE_FILE}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path(pod_dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::resize::Actuated;

    #[test]
    fn an_allocation_survives_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let pod_dir = dir.path().join("uid-1");
        assert_eq!(load(&pod_dir), None);
        let mut allocation = PodAllocation {
            generation: Some(2),
            ..Default::default()
        };
        allocation.allocated.insert(
            "app".into(),
            serde_json::from_value(serde_json::json!({"requests": {"cpu": "20m"}})).unwrap(),
        );
        allocation.actuated.insert(
            "app".into(),
            Actuated {
                container_id: "c1".into(),
                resources: Default::default(),
            },
        );
        save(&pod_dir, &allocation).unwrap();
        assert_eq!(load(&pod_dir), Some(allocation));
        fs::write(pod_dir.join(STATE_FILE), "{not json").unwrap();
        assert_eq!(load(&pod_dir), None);
    }
}
