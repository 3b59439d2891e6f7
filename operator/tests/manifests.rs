//! The manifests ship a copy of the generated CRD, since kustomize refuses files outside
//! `manifests/`; this fails when the copy is stale. Fix: `cp crds/nodeconfig.dev_nodeconfigs.yaml manifests/crd/`.

#[test]
fn manifests_carry_the_current_crd() {
    let generated = include_str!("../../crds/nodeconfig.dev_nodeconfigs.yaml");
    let copy = include_str!("../../manifests/crd/nodeconfig.dev_nodeconfigs.yaml");
    assert!(
        generated == copy,
        "manifests/crd/nodeconfig.dev_nodeconfigs.yaml differs from crds/nodeconfig.dev_nodeconfigs.yaml; \
         run: cp crds/nodeconfig.dev_nodeconfigs.yaml manifests/crd/"
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = include_str!("../../manifests/kustomization.yaml");
    for file in [
        "namespace.yaml",
        "crd/nodeconfig.dev_nodeconfigs.yaml",
        "rbac-operator.yaml",
        "rbac-agent.yaml",
        "admission-policy.yaml",
        "defaults-configmap.yaml",
        "operator-deployment.yaml",
    ] {
        assert!(kustomization.contains(&format!("- {file}")), "kustomization.yaml does not list {file}");
    }
}
