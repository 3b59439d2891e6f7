use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::pods::cri_config::container::*;
use crate::pods::cri_config::error::ConfigError;
use crate::pods::runtime_view::{
    ANNOTATION_CONTAINER_HASH, ANNOTATION_RESTART_COUNT, LABEL_CONTAINER_NAME,
};

const GI: i64 = 1 << 30;

fn pod_with(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1"},
        "spec": spec
    }))
    .unwrap()
}

fn pod(container: Value) -> Pod {
    pod_with(json!({"containers": [container]}))
}

fn context(env: &[(&str, &str)]) -> ContainerContext<'static> {
    ContainerContext {
        restart_count: 3,
        env: env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        mounts: vec![cri::Mount {
            container_path: "/data".into(),
            host_path: "/var/lib/pods/u-1/volumes/data".into(),
            ..Default::default()
        }],
        spec_hash: "abc123",
        node_memory_capacity: 4 * GI,
        image_user: None,
        pid_target: None,
    }
}

fn build(pod: &Pod) -> Result<cri::ContainerConfig, ConfigError> {
    build_with(pod, context(&[]))
}

fn build_with(pod: &Pod, ctx: ContainerContext<'_>) -> Result<cri::ContainerConfig, ConfigError> {
    container_config(pod, &pod.spec.as_ref().unwrap().containers[0], ctx)
}

fn resources(container: Value) -> cri::LinuxContainerResources {
    build(&pod(container))
        .unwrap()
        .linux
        .unwrap()
        .resources
        .unwrap()
}

fn security(pod: &Pod) -> cri::LinuxContainerSecurityContext {
    build(pod).unwrap().linux.unwrap().security_context.unwrap()
}

#[test]
fn log_path_is_per_restart() {
    assert_eq!(container_log_path("app", 0), "app/0.log");
    assert_eq!(container_log_path("app", 12), "app/12.log");
}

#[test]
fn identity_process_and_io() {
    let pod = pod(json!({
        "name": "app", "image": "nginx:1.27",
        "command": ["/bin/sh", "-c"], "args": ["echo $(GREETING) $(MISSING) $$(GREETING)"],
        "workingDir": "/srv", "stdin": true, "stdinOnce": true, "tty": true
    }));
    let config = build_with(&pod, context(&[("GREETING", "old"), ("GREETING", "hello")])).unwrap();
    let meta = config.metadata.clone().unwrap();
    assert_eq!((meta.name.as_str(), meta.attempt), ("app", 3));
    assert_eq!(config.image.as_ref().unwrap().image, "nginx:1.27");
    assert_eq!(config.command, ["/bin/sh", "-c"]);
    assert_eq!(config.args, ["echo hello $(MISSING) $(GREETING)"]);
    assert_eq!(config.working_dir, "/srv");
    assert_eq!(config.envs.len(), 2);
    assert_eq!(config.mounts[0].container_path, "/data");
    assert_eq!(config.log_path, "app/3.log");
    assert!(config.stdin && config.stdin_once && config.tty);
    assert_eq!(config.labels[LABEL_CONTAINER_NAME], "app");
    assert_eq!(config.annotations[ANNOTATION_CONTAINER_HASH], "abc123");
    assert_eq!(config.annotations[ANNOTATION_RESTART_COUNT], "3");
}

#[test]
fn cpu_and_memory_become_cgroup_settings() {
    let r = resources(json!({"name": "a", "resources": {
        "requests": {"cpu": "250m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "128Mi"}
    }}));
    assert_eq!(r.cpu_shares, 256);
    assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000));
    assert_eq!(r.memory_limit_in_bytes, 128 << 20);

    let none = resources(json!({"name": "a"}));
    assert_eq!(none.cpu_shares, 2, "no request: the kernel's minimum");
    assert_eq!(
        (none.cpu_period, none.cpu_quota, none.memory_limit_in_bytes),
        (100_000, 0, 0)
    );

    let limits_only =
        resources(json!({"name": "a", "resources": {"limits": {"cpu": "1.5", "memory": "1G"}}}));
    assert_eq!(
        limits_only.cpu_shares, 1536,
        "the request defaults to the limit"
    );
    assert_eq!(limits_only.cpu_quota, 150_000);
    assert_eq!(limits_only.memory_limit_in_bytes, 1_000_000_000);

    let tiny = resources(json!({"name": "a", "resources": {"limits": {"cpu": "1m"}}}));
    assert_eq!(
        (tiny.cpu_shares, tiny.cpu_quota),
        (2, 1000),
        "at least 2 shares and 1ms"
    );
}

#[test]
fn shares_and_quota_conversions() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(100), 102);
    assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
    assert_eq!(milli_cpu_to_quota(0, 100_000), 0);
    assert_eq!(milli_cpu_to_quota(5, 100_000), 1000);
    assert_eq!(milli_cpu_to_quota(2000, 100_000), 200_000);
}

#[test]
fn qos_classes() {
    let class = |containers: Value| qos_class(&pod_with(json!({"containers": containers})));
    assert_eq!(class(json!([{"name": "a"}])), QosClass::BestEffort);
    assert_eq!(
        class(json!([{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}])),
        QosClass::Guaranteed,
        "requests default to limits"
    );
    assert_eq!(
        class(json!([{"name": "a", "resources": {
            "requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}])),
        QosClass::Guaranteed,
        "equal amounts in different spellings"
    );
    assert_eq!(
        class(json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}])),
        QosClass::Burstable
    );
    assert_eq!(
        class(json!([
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b"}
        ])),
        QosClass::Burstable,
        "every container needs cpu and memory limits"
    );
    let with_init = pod_with(json!({
        "initContainers": [{"name": "i", "resources": {"requests": {"memory": "10Mi"}}}],
        "containers": [{"name": "a"}]
    }));
    assert_eq!(qos_class(&with_init), QosClass::Burstable);
    let mut recorded = pod(json!({"name": "a"}));
    recorded.status = Some(serde_json::from_value(json!({"qosClass": "Burstable"})).unwrap());
    assert_eq!(
        qos_class(&recorded),
        QosClass::Burstable,
        "the recorded class wins"
    );
}

#[test]
fn oom_score_by_qos() {
    let oom = |container: Value| resources(container).oom_score_adj;
    assert_eq!(oom(json!({"name": "a"})), 1000);
    assert_eq!(
        oom(json!({"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}})),
        -997
    );
    assert_eq!(
        oom(json!({"name": "a", "resources": {"requests": {"memory": "1Gi"}}})),
        750,
        "a quarter of the node's 4Gi"
    );
    assert_eq!(
        oom(json!({"name": "a", "resources": {"requests": {"cpu": "1"}}})),
        999
    );
    assert_eq!(
        oom(json!({"name": "a", "resources": {"requests": {"memory": "8Gi"}}})),
        3
    );
    let critical = pod_with(
        json!({"priorityClassName": "system-node-critical", "containers": [{"name": "a"}]}),
    );
    assert_eq!(
        build(&critical)
            .unwrap()
            .linux
            .unwrap()
            .resources
            .unwrap()
            .oom_score_adj,
        -997
    );
}

#[test]
fn container_security_context_overrides_the_pods() {
    let pod = pod_with(json!({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                            "supplementalGroups": [4000], "seccompProfile": {"type": "RuntimeDefault"}},
        "shareProcessNamespace": true,
        "containers": [{"name": "a", "securityContext": {
            "runAsUser": 1500, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "CAP_sys_time"], "drop": ["ALL"]}
        }}]
    }));
    let sc = security(&pod);
    assert_eq!(sc.run_as_user.map(|v| v.value), Some(1500));
    assert_eq!(sc.run_as_group.map(|v| v.value), Some(3000));
    assert_eq!(sc.supplemental_groups, [2000, 4000]);
    assert!(sc.readonly_rootfs);
    assert!(sc.no_new_privs);
    let caps = sc.capabilities.unwrap();
    assert_eq!(
        caps.add_capabilities,
        ["NET_ADMIN", "SYS_TIME"],
        "CRI names carry no CAP_ prefix"
    );
    assert_eq!(caps.drop_capabilities, ["ALL"]);
    assert_eq!(
        sc.seccomp.unwrap().profile_type,
        cri::security_profile::ProfileType::RuntimeDefault as i32
    );
    assert_eq!(
        sc.namespace_options.unwrap().pid,
        cri::NamespaceMode::Pod as i32
    );
    assert_eq!(sc.masked_paths.len(), 11);
    assert!(sc.readonly_paths.contains(&"/proc/sys".to_string()));
}

#[test]
fn an_ephemeral_container_joins_its_targets_processes_unless_the_pod_shares_them() {
    let pid = |pod: &Pod| {
        let ctx = ContainerContext {
            pid_target: Some("c-target"),
            ..context(&[])
        };
        let sc = build_with(pod, ctx)
            .unwrap()
            .linux
            .unwrap()
            .security_context
            .unwrap();
        let ns = sc.namespace_options.unwrap();
        (ns.pid, ns.target_id)
    };
    assert_eq!(
        pid(&pod(json!({"name": "debug"}))),
        (cri::NamespaceMode::Target as i32, "c-target".to_string())
    );
    let shared =
        pod_with(json!({"shareProcessNamespace": true, "containers": [{"name": "debug"}]}));
    assert_eq!(
        pid(&shared),
        (cri::NamespaceMode::Pod as i32, String::new())
    );
}

#[test]
fn defaults_of_an_unconfigured_container() {
    let sc = security(&pod(json!({"name": "a"})));
    assert!(!sc.privileged && !sc.no_new_privs && !sc.readonly_rootfs);
    assert_eq!(sc.run_as_user, None);
    assert_eq!(sc.capabilities, None);
    assert!(sc.masked_paths.contains(&"/proc/kcore".to_string()));
    assert_eq!(
        sc.seccomp.unwrap().profile_type,
        cri::security_profile::ProfileType::Unconfined as i32,
        "the kubelet's default without seccompDefault"
    );
}

#[test]
fn privileged_and_unmasked_containers_see_all_of_proc() {
    for sc in [
        json!({"privileged": true, "allowPrivilegeEscalation": false}),
        json!({"procMount": "Unmasked"}),
    ] {
        let security = security(&pod(json!({"name": "a", "securityContext": sc})));
        assert!(
            security.masked_paths.is_empty() && security.readonly_paths.is_empty(),
            "{sc}"
        );
        assert!(!security.no_new_privs, "{sc}");
    }
    let sys_admin = security(&pod(json!({"name": "a", "securityContext": {
        "allowPrivilegeEscalation": false, "capabilities": {"add": ["SYS_ADMIN"]}}})));
    assert!(
        !sys_admin.no_new_privs,
        "CAP_SYS_ADMIN always allows escalation"
    );
}

#[test]
fn localhost_seccomp_profiles_live_under_the_kubelet_root() {
    let sc = security(&pod(json!({"name": "a", "securityContext": {
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}})));
    let profile = sc.seccomp.unwrap();
    assert_eq!(
        profile.profile_type,
        cri::security_profile::ProfileType::Localhost as i32
    );
    assert_eq!(
        profile.localhost_ref,
        "/var/lib/kubelet/seccomp/profiles/audit.json"
    );
}

#[test]
fn run_as_non_root_refuses_root() {
    let with_image = |pod: &Pod, image_user: Option<ImageUser<'static>>| {
        build_with(
            pod,
            ContainerContext {
                image_user,
                ..context(&[])
            },
        )
    };
    let explicit_root = pod_with(json!({
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "app", "securityContext": {"runAsUser": 0}}]
    }));
    let err = build(&explicit_root).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container's runAsUser breaks non-root policy (pod: \"web-0_shop(u-1)\", container: app)"
    );
    assert_eq!(err.reason(), "CreateContainerConfigError");

    let non_root = pod(json!({"name": "app", "securityContext": {"runAsNonRoot": true}}));
    assert!(
        with_image(&non_root, None).is_ok(),
        "an unknown image user is not checked"
    );
    assert!(with_image(&non_root, Some(ImageUser::Uid(1000))).is_ok());
    assert!(matches!(
        with_image(&non_root, Some(ImageUser::Uid(0))),
        Err(ConfigError::ImageRunsAsRoot { .. })
    ));
    assert!(matches!(
        with_image(&non_root, Some(ImageUser::Name("www-data"))),
        Err(ConfigError::ImageUserNotNumeric { .. })
    ));

    assert_eq!(
        ImageUser::from_status(None, ""),
        ImageUser::Uid(0),
        "no user is root"
    );
    assert_eq!(ImageUser::from_status(Some(7), "x"), ImageUser::Uid(7));
    assert_eq!(ImageUser::from_status(None, "x"), ImageUser::Name("x"));
    assert!(needs_image_user(
        &non_root,
        &non_root.spec.as_ref().unwrap().containers[0]
    ));

    let overridden = pod_with(json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 0},
        "containers": [{"name": "app", "securityContext": {"runAsUser": 1000}}]
    }));
    assert!(
        with_image(&overridden, Some(ImageUser::Uid(0))).is_ok(),
        "runAsUser 1000 wins over the image"
    );
    let allowed =
        pod(json!({"name": "app", "securityContext": {"runAsNonRoot": false, "runAsUser": 0}}));
    assert!(build(&allowed).is_ok());
}

#[test]
#[allow(deprecated)] // the string form containerd 1.6 reads
fn apparmor_profiles_go_to_the_runtime_in_both_forms() {
    let profile_of = |p: &Pod| {
        let sc = security(p);
        (
            sc.apparmor.map(|a| (a.profile_type, a.localhost_ref)),
            sc.apparmor_profile,
        )
    };
    use cri::security_profile::ProfileType;
    assert_eq!(
        profile_of(&pod(json!({"name": "app"}))),
        (None, String::new()),
        "none set: the runtime's choice"
    );
    let localhost = pod(json!({"name": "app",
        "securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-deny"}}}));
    assert_eq!(
        profile_of(&localhost),
        (
            Some((ProfileType::Localhost as i32, "k8s-deny".into())),
            "localhost/k8s-deny".into()
        )
    );
    let pod_level = pod_with(json!({
        "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app"}]
    }));
    assert_eq!(
        profile_of(&pod_level),
        (
            Some((ProfileType::RuntimeDefault as i32, String::new())),
            "runtime/default".into()
        )
    );
    let mut annotated = pod_level.clone();
    annotated.metadata.annotations = Some(
        [(
            "container.apparmor.security.beta.kubernetes.io/app".to_string(),
            "unconfined".to_string(),
        )]
        .into(),
    );
    assert_eq!(
        profile_of(&annotated),
        (
            Some((ProfileType::Unconfined as i32, String::new())),
            "unconfined".into()
        ),
        "the container's annotation comes before the pod's field"
    );
}
