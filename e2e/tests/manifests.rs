//! What a user applies, checked by the real API server.

use nodeconfig_e2e::kubectl::{kubectl, require_cluster};
use nodeconfig_e2e::repo_root;

#[test]
fn manifests_pass_a_server_side_dry_run() {
    require_cluster();
    let dir = repo_root().join("manifests");
    let out = kubectl(&["apply", "--dry-run=server", "-k", dir.to_str().unwrap()])
        .expect_ok("apply --dry-run=server -k manifests/");
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/nodeconfigs.nodeconfig.dev",
        "deployment.apps/nodeconfig-operator",
        "configmap/nodeconfig-defaults",
        "clusterrole.rbac.authorization.k8s.io/nodeconfig-agent",
        "validatingadmissionpolicy.admissionregistration.k8s.io/nodeconfig-node-restriction",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
}

#[test]
fn the_agent_may_write_its_nodeconfig_status_but_not_its_spec() {
    require_cluster();
    let sa = "system:serviceaccount:nodeconfig-system:node-agent";
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        full.extend(["--as", sa]);
        kubectl(&full).stdout.trim() == "yes"
    };
    assert!(can(&[
        "patch",
        "nodeconfigs.nodeconfig.dev",
        "--subresource=status"
    ]));
    assert!(can(&["watch", "nodeconfigs.nodeconfig.dev"]));
    assert!(!can(&["patch", "nodeconfigs.nodeconfig.dev"]));
    assert!(!can(&["delete", "nodeconfigs.nodeconfig.dev"]));
    assert!(!can(&["create", "pods", "-n", "default"]));
}
