//! The `e2e/cluster` command, for tests that stop and start parts of the cluster.

use std::process::Command;

use crate::repo_root;

/// Runs `e2e/cluster ARGS`, panicking with its output when it fails.
#[track_caller]
pub fn cluster(args: &[&str]) {
    let out = Command::new(repo_root().join("e2e/cluster"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run e2e/cluster: {e}"));
    assert!(
        out.status.success(),
        "e2e/cluster {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
