//! What `kubectl apply -k manifests/` installs.

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = include_str!("../../manifests/kustomization.yaml");
    for file in [
        "namespace.yaml",
        "../crds",
        "rbac-operator.yaml",
        "rbac-agent.yaml",
        "admission-policy.yaml",
        "defaults-configmap.yaml",
        "operator-deployment.yaml",
    ] {
        assert!(
            kustomization.contains(&format!("- {file}")),
            "kustomization.yaml does not list {file}"
        );
    }
}
