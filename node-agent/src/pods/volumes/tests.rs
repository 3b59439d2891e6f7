//! Volume planning and mounts on Pods built from JSON, and the atomic writer
//! and volume setup on a temporary directory.
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use serde_json::json;

use crate::pods::volumes::atomic_writer::{write_atomically, DATA_DIR};
use crate::pods::volumes::manager::{known_pod_dirs, make_volumes, prepare_mounts, remove_pod_dir};
use crate::pods::volumes::plan::*;

fn pod(volumes: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web", "namespace": "shop", "uid": "uid-1",
            "labels": {"app": "web", "tier": "front"},
        },
        "spec": {
            "serviceAccountName": "builder",
            "containers": [{"name": "app", "image": "app:1"}],
            "volumes": volumes,
        },
    }))
    .unwrap()
}

fn config_map(name: &str, data: serde_json::Value) -> (String, Option<ConfigMap>) {
    let cm = serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap();
    (name.to_string(), Some(cm))
}

fn secret(name: &str, data: serde_json::Value) -> (String, Option<Secret>) {
    let s = serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap();
    (name.to_string(), Some(s))
}

fn data() -> VolumeData {
    VolumeData {
        config_maps: BTreeMap::from([
            config_map("settings", json!({"a.conf": "A", "b.conf": "B"})),
            config_map(
                "kube-root-ca.crt",
                json!({"ca.crt": "-----BEGIN CERTIFICATE-----"}),
            ),
        ]),
        // "cGFzcw==" is "pass".
        secrets: BTreeMap::from([secret("creds", json!({"password": "cGFzcw=="}))]),
        ..VolumeData::default()
    }
}

/// (path, content, mode) of each file of the only volume.
fn files_of(plans: &[VolumePlan]) -> Vec<(String, String, u32)> {
    match plans {
        [VolumePlan::Files { files, .. }] => files
            .iter()
            .map(|f| {
                (
                    f.path.to_string_lossy().into_owned(),
                    String::from_utf8_lossy(&f.bytes).into_owned(),
                    f.mode,
                )
            })
            .collect(),
        other => panic!("expected one volume of files, got {other:?}"),
    }
}

fn failure(result: Result<Vec<VolumePlan>, VolumeError>) -> (String, SetUpFailure) {
    match result {
        Err(VolumeError::SetUp { volume, reason }) => (volume, reason),
        other => panic!("expected a set-up failure, got {other:?}"),
    }
}

#[test]
fn a_config_map_volume_has_one_file_per_key_with_the_default_mode() {
    let pod = pod(json!([{"name": "cfg", "configMap": {"name": "settings"}}]));
    let plans = plan_volumes(&pod, &data()).unwrap();
    assert_eq!(
        files_of(&plans),
        [
            ("a.conf".into(), "A".into(), 0o644),
            ("b.conf".into(), "B".into(), 0o644)
        ]
    );
}

#[test]
fn items_pick_keys_and_paths_and_modes() {
    let pod = pod(json!([{"name": "cfg", "configMap": {
        "name": "settings", "defaultMode": 0o600,
        "items": [
            {"key": "a.conf", "path": "conf/first.conf"},
            {"key": "b.conf", "path": "second.conf", "mode": 0o400},
        ],
    }}]));
    let plans = plan_volumes(&pod, &data()).unwrap();
    assert_eq!(
        files_of(&plans),
        [
            ("conf/first.conf".into(), "A".into(), 0o600),
            ("second.conf".into(), "B".into(), 0o400)
        ]
    );
}

#[test]
fn a_secret_volume_holds_the_decoded_values() {
    let pod = pod(json!([{"name": "s", "secret": {"secretName": "creds"}}]));
    let plans = plan_volumes(&pod, &data()).unwrap();
    assert_eq!(
        files_of(&plans),
        [("password".into(), "pass".into(), 0o644)]
    );
    assert!(matches!(
        &plans[0],
        VolumePlan::Files {
            source: FileSource::Secret,
            ..
        }
    ));
}

#[test]
fn missing_objects_fail_the_mount_the_way_the_kubelet_reports_it() {
    let missing_cm = pod(json!([{"name": "cfg", "configMap": {"name": "nope"}}]));
    let err = plan_volumes(&missing_cm, &data()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"nope\" not found"
    );

    let missing_secret = pod(json!([{"name": "s", "secret": {"secretName": "gone"}}]));
    let mut fetched = data();
    fetched.secrets.insert("gone".into(), None);
    assert_eq!(
        failure(plan_volumes(&missing_secret, &fetched)),
        ("s".into(), SetUpFailure::SecretNotFound("gone".into()))
    );

    let missing_key = pod(json!([{"name": "cfg", "configMap": {
        "name": "settings", "items": [{"key": "c.conf", "path": "c"}],
    }}]));
    assert_eq!(
        failure(plan_volumes(&missing_key, &data())).1,
        SetUpFailure::ConfigMapKeyMissing("c.conf".into())
    );
}

#[test]
fn optional_objects_and_keys_may_be_missing() {
    let pod = pod(json!([
        {"name": "cfg", "configMap": {"name": "nope", "optional": true}},
        {"name": "keys", "configMap": {"name": "settings", "optional": true,
            "items": [{"key": "c.conf", "path": "c"}, {"key": "a.conf", "path": "a"}]}},
        {"name": "s", "secret": {"secretName": "gone", "optional": true}},
    ]));
    let plans = plan_volumes(&pod, &data()).unwrap();
    let counts: Vec<usize> = plans
        .iter()
        .map(|p| match p {
            VolumePlan::Files { files, .. } => files.len(),
            _ => usize::MAX,
        })
        .collect();
    assert_eq!(counts, [0, 1, 0]);
}

#[test]
fn downward_api_files_hold_pod_fields() {
    let pod = pod(json!([{"name": "info", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o400},
        {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
    ]}}]));
    let plans = plan_volumes(&pod, &data()).unwrap();
    assert_eq!(
        files_of(&plans),
        [
            ("labels".into(), "app=\"web\"\ntier=\"front\"".into(), 0o644),
            ("name".into(), "web".into(), 0o400),
            ("tier".into(), "front".into(), 0o644),
        ]
    );
    let unsupported = pod_with_downward("status.phase");
    assert!(matches!(
        failure(plan_volumes(&unsupported, &data())).1,
        SetUpFailure::DownwardApi(_)
    ));
}

fn pod_with_downward(field_path: &str) -> Pod {
    pod(json!([{"name": "info", "downwardAPI": {"items": [
        {"path": "x", "fieldRef": {"fieldPath": field_path}},
    ]}}]))
}

/// The volume the ServiceAccount admission plugin adds to every pod.
fn kube_api_access() -> serde_json::Value {
    json!({"name": "kube-api-access-x7k2p", "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [
                {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
            ]}},
        ],
    }})
}

fn builder_token() -> TokenKey {
    TokenKey {
        service_account: "builder".into(),
        audience: String::new(),
        expiration_seconds: 3607,
    }
}

#[test]
fn the_kube_api_access_volume_holds_token_ca_and_namespace() {
    let pod = pod(json!([kube_api_access()]));
    let required = required_objects(&pod);
    assert_eq!(
        required.config_maps.iter().collect::<Vec<_>>(),
        ["kube-root-ca.crt"]
    );
    assert!(required.secrets.is_empty());
    assert_eq!(
        required.tokens.iter().collect::<Vec<_>>(),
        [&builder_token()]
    );

    let mut fetched = data();
    fetched
        .tokens
        .insert(builder_token(), "eyJhbGciOi.token".into());
    let plans = plan_volumes(&pod, &fetched).unwrap();
    assert_eq!(
        files_of(&plans),
        [
            ("ca.crt".into(), "-----BEGIN CERTIFICATE-----".into(), 0o644),
            ("namespace".into(), "shop".into(), 0o644),
            ("token".into(), "eyJhbGciOi.token".into(), 0o644),
        ]
    );

    // Without its token (the TokenRequest failed), the volume is not made.
    assert_eq!(
        failure(plan_volumes(&pod, &data())).1,
        SetUpFailure::TokenMissing("builder".into())
    );
}

#[test]
fn with_an_fs_group_the_token_is_readable_by_the_group_only() {
    let mut pod = pod(json!([kube_api_access()]));
    pod.spec.as_mut().unwrap().security_context =
        Some(serde_json::from_value(json!({"fsGroup": 2000})).unwrap());
    let mut fetched = data();
    fetched.tokens.insert(builder_token(), "t".into());
    let plans = plan_volumes(&pod, &fetched).unwrap();
    let modes: Vec<(String, u32)> = files_of(&plans)
        .into_iter()
        .map(|(p, _, m)| (p, m))
        .collect();
    assert_eq!(
        modes,
        [
            ("ca.crt".into(), 0o644),
            ("namespace".into(), 0o644),
            ("token".into(), 0o640)
        ]
    );
    assert!(matches!(
        &plans[0],
        VolumePlan::Files {
            fs_group: Some(2000),
            ..
        }
    ));
}

#[test]
fn trust_bundle_and_pod_certificate_sources_write_their_files() {
    use crate::pods::volumes::pod_certificate::Credentials;
    use crate::pods::volumes::trust_bundles::encode_pem;
    let ca = encode_pem("CERTIFICATE", b"ca");
    let mut pod = pod(
        json!([{"name": "tls", "projected": {"defaultMode": 0o444, "sources": [
            {"clusterTrustBundle": {"name": "roots", "path": "ca.pem"}},
            {"podCertificate": {"signerName": "x.io/s", "keyType": "ED25519",
                "credentialBundlePath": "bundle.pem", "keyPath": "key.pem",
                "maxExpirationSeconds": 3600, "userAnnotations": {"a": "b"}}},
        ]}}]),
    );
    let required = required_objects(&pod);
    assert!(required.trust_bundles);
    assert_eq!(
        required.pod_certificates,
        [PodCertificateSource {
            volume: "tls".into(),
            index: 1,
            signer_name: "x.io/s".into(),
            key_type: "ED25519".into(),
            max_expiration_seconds: Some(3600),
            user_annotations: BTreeMap::from([("a".into(), "b".into())]),
        }]
    );
    let mut fetched = data();
    fetched.cluster_trust_bundles = vec![serde_json::from_value(json!({
        "metadata": {"name": "roots"}, "spec": {"trustBundle": ca},
    }))
    .unwrap()];
    // Not issued yet: the volume fails with the manager's text.
    let (volume, reason) = failure(plan_volumes(&pod, &fetched));
    assert_eq!(volume, "tls");
    assert_eq!(reason.to_string(), "credential bundle is not issued yet");
    fetched.pod_certificates.insert(
        ("tls".into(), 1),
        Ok(Credentials {
            key_pem: b"KEY\n".to_vec(),
            chain_pem: b"CHAIN\n".to_vec(),
        }),
    );
    let files = files_of(&plan_volumes(&pod, &fetched).unwrap());
    assert_eq!(
        files,
        [
            ("bundle.pem".into(), "KEY\nCHAIN\n".into(), 0o444),
            ("ca.pem".into(), ca.clone(), 0o444),
            ("key.pem".into(), "KEY\n".into(), 0o444),
        ]
    );
    // With an fsGroup both are private to the owner and the group.
    pod.spec.as_mut().unwrap().security_context =
        Some(serde_json::from_value(json!({"fsGroup": 2000})).unwrap());
    let modes: Vec<u32> = files_of(&plan_volumes(&pod, &fetched).unwrap())
        .into_iter()
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(modes, [0o640, 0o640, 0o640]);
}

#[test]
fn item_paths_must_stay_inside_the_volume() {
    for (path, reason) in [
        ("../escape", "must not contain '..'"),
        ("a/../../b", "must not contain '..'"),
        ("/etc/passwd", "must be a relative path"),
        ("..data", "must not start with '..'"),
        ("", "must not be empty"),
    ] {
        let pod = pod(json!([{"name": "cfg", "configMap": {
            "name": "settings", "items": [{"key": "a.conf", "path": path}],
        }}]));
        assert_eq!(
            failure(plan_volumes(&pod, &data())).1,
            SetUpFailure::InvalidPath {
                path: path.into(),
                reason
            },
            "{path}"
        );
    }
    let cleaned = pod(json!([{"name": "cfg", "configMap": {
        "name": "settings", "items": [{"key": "a.conf", "path": "./conf//a"}],
    }}]));
    assert_eq!(
        files_of(&plan_volumes(&cleaned, &data()).unwrap())[0].0,
        "conf/a"
    );
}

#[test]
fn empty_dir_host_path_and_unsupported_volumes() {
    let pod = pod(json!([
        {"name": "scratch", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
        {"name": "logs", "hostPath": {"path": "/var/log", "type": "Directory"}},
    ]));
    assert_eq!(
        plan_volumes(&pod, &data()).unwrap(),
        [
            VolumePlan::Dir {
                name: "scratch".into(),
                kind: EmptyDir::Disk,
                fs_group: None
            },
            VolumePlan::Dir {
                name: "shm".into(),
                kind: EmptyDir::Memory,
                fs_group: None
            },
            VolumePlan::HostPath {
                name: "logs".into(),
                path: "/var/log".into(),
                type_: HostPathType::Directory
            },
        ]
    );
    let pvc = pod_with_volume(json!({"name": "data", "persistentVolumeClaim": {"claimName": "c"}}));
    assert_eq!(
        plan_volumes(&pvc, &data()).unwrap_err().to_string(),
        "MountVolume.SetUp failed for volume \"data\" : persistentVolumeClaim volumes are not supported by this node"
    );
}

fn pod_with_volume(volume: serde_json::Value) -> Pod {
    pod(json!([volume]))
}

fn container(mounts: serde_json::Value) -> Container {
    serde_json::from_value(json!({"name": "app", "volumeMounts": mounts})).unwrap()
}

fn host_paths() -> BTreeMap<String, PathBuf> {
    BTreeMap::from([
        (
            "scratch".into(),
            "/pods/uid-1/volumes/kubernetes.io~empty-dir/scratch".into(),
        ),
        (
            "cfg".into(),
            "/pods/uid-1/volumes/kubernetes.io~configmap/cfg".into(),
        ),
        ("logs".into(), "/var/log".into()),
    ])
}

#[test]
fn volume_mounts_become_cri_mounts() {
    let c = container(json!([
        {"name": "scratch", "mountPath": "/tmp/work"},
        {"name": "cfg", "mountPath": "/etc/app/a.conf", "subPath": "a.conf"},
        {"name": "logs", "mountPath": "/logs", "readOnly": true, "mountPropagation": "HostToContainer"},
    ]));
    let mounts = container_mounts(&c, &host_paths(), &[]).unwrap();
    let view: Vec<(&str, &str, bool, i32)> = mounts
        .iter()
        .map(|m| {
            (
                m.container_path.as_str(),
                m.host_path.as_str(),
                m.readonly,
                m.propagation,
            )
        })
        .collect();
    let private = cri::MountPropagation::PropagationPrivate as i32;
    assert_eq!(
        view,
        [
            (
                "/tmp/work",
                "/pods/uid-1/volumes/kubernetes.io~empty-dir/scratch",
                false,
                private
            ),
            // API data volumes are read-only even when the mount does not say so.
            (
                "/etc/app/a.conf",
                "/pods/uid-1/volumes/kubernetes.io~configmap/cfg/a.conf",
                true,
                private
            ),
            (
                "/logs",
                "/var/log",
                true,
                cri::MountPropagation::PropagationHostToContainer as i32
            ),
        ]
    );
    assert!(mounts.iter().all(|m| !m.selinux_relabel));
}

#[test]
fn sub_paths_must_stay_inside_the_volume() {
    for (sub_path, reason) in [
        ("../../etc", "must not contain '..'"),
        ("a/..", "must not contain '..'"),
        ("/etc", "must not be an absolute path"),
    ] {
        let c = container(json!([{"name": "scratch", "mountPath": "/x", "subPath": sub_path}]));
        match container_mounts(&c, &host_paths(), &[]) {
            Err(VolumeError::SubPath { reason: got, .. }) => assert_eq!(got, reason, "{sub_path}"),
            other => panic!("{sub_path}: expected a subPath error, got {other:?}"),
        }
    }
    let unknown = container(json!([{"name": "nope", "mountPath": "/x"}]));
    assert_eq!(
        container_mounts(&unknown, &host_paths(), &[])
            .unwrap_err()
            .to_string(),
        "cannot find volume \"nope\" to mount into container \"app\""
    );
}

fn envs(pairs: &[(&str, &str)]) -> Vec<cri::KeyValue> {
    pairs
        .iter()
        .map(|(key, value)| cri::KeyValue {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect()
}

#[test]
fn sub_path_exprs_expand_the_container_environment() {
    let env = envs(&[
        ("POD_NAME", "web-0"),
        ("ANNOTATION", "mypath"),
        ("EMPTY", ""),
    ]);
    for (expr, want) in [
        ("$(POD_NAME)", "web-0"),
        ("$(ANNOTATION)/$(POD_NAME)", "mypath/web-0"),
        ("logs/$(POD_NAME).d", "logs/web-0.d"),
        ("$$(POD_NAME)", "$(POD_NAME)"),
        ("a$b", "a$b"),
    ] {
        let c = container(json!([{"name": "scratch", "mountPath": "/x", "subPathExpr": expr}]));
        let mounts = container_mounts(&c, &host_paths(), &env).unwrap();
        assert_eq!(
            mounts[0].host_path,
            format!("/pods/uid-1/volumes/kubernetes.io~empty-dir/scratch/{want}"),
            "{expr}"
        );
    }
}

#[test]
fn sub_path_exprs_fail_on_missing_values_and_on_paths_leaving_the_volume() {
    let env = envs(&[("UP", ".."), ("ROOT", "/tmp"), ("EMPTY", "")]);
    let failure = |expr: &str| {
        let c = container(json!([{"name": "scratch", "mountPath": "/x", "subPathExpr": expr}]));
        container_mounts(&c, &host_paths(), &env).unwrap_err()
    };
    assert!(matches!(
        failure("$(UP)"),
        VolumeError::SubPath {
            reason: "must not contain '..'",
            ..
        }
    ));
    assert!(matches!(
        failure("$(ROOT)"),
        VolumeError::SubPath {
            reason: "must not be an absolute path",
            ..
        }
    ));
    assert_eq!(
        failure("$(NOPE)/$(EMPTY)/$(UP)").to_string(),
        "container \"app\": subPathExpr \"$(NOPE)/$(EMPTY)/$(UP)\" of volume \"scratch\": \
         missing value for EMPTY, NOPE"
    );
}

// The shell, on a temporary directory.

fn entry(path: &str, content: &str) -> FileEntry {
    FileEntry {
        path: path.into(),
        bytes: content.as_bytes().to_vec(),
        mode: 0o644,
    }
}

fn read(dir: &Path, path: &str) -> String {
    fs::read_to_string(dir.join(path)).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_writer_links_visible_files_through_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let mut secret = entry("conf/secret", "s3");
    secret.mode = 0o600;
    assert!(write_atomically(&dir, &[entry("token", "t1"), secret], None).unwrap());

    assert_eq!(read(&dir, "token"), "t1");
    assert_eq!(read(&dir, "conf/secret"), "s3");
    assert_eq!(
        fs::read_link(dir.join("token")).unwrap(),
        Path::new("..data/token")
    );
    assert_eq!(
        fs::read_link(dir.join("conf")).unwrap(),
        Path::new("..data/conf")
    );
    let ts_dir = fs::read_link(dir.join(DATA_DIR)).unwrap();
    assert!(ts_dir.to_string_lossy().starts_with("..20"), "{ts_dir:?}");
    assert_eq!(mode(&dir.join("token")), 0o644);
    assert_eq!(mode(&dir.join("conf/secret")), 0o600);
    assert_eq!(mode(&dir.join(&ts_dir)), 0o755);
    assert_eq!(mode(&dir.join("conf")), 0o755);
}

#[test]
fn the_writer_swaps_content_and_drops_removed_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    write_atomically(&dir, &[entry("a", "1"), entry("b", "2")], None).unwrap();
    let first = fs::read_link(dir.join(DATA_DIR)).unwrap();

    assert!(write_atomically(&dir, &[entry("a", "changed")], None).unwrap());
    assert_eq!(read(&dir, "a"), "changed");
    assert!(
        fs::symlink_metadata(dir.join("b")).is_err(),
        "b must be gone"
    );
    let second = fs::read_link(dir.join(DATA_DIR)).unwrap();
    assert_ne!(first, second);
    assert!(
        !dir.join(&first).exists(),
        "the old version must be removed"
    );
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [second.to_str().unwrap(), "..data", "a"]);
}

#[test]
fn the_writer_leaves_unchanged_content_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let files = [entry("a", "1"), entry("sub/b", "2")];
    write_atomically(&dir, &files, None).unwrap();
    let before = fs::read_link(dir.join(DATA_DIR)).unwrap();
    assert!(!write_atomically(&dir, &files, None).unwrap());
    assert_eq!(fs::read_link(dir.join(DATA_DIR)).unwrap(), before);

    // A changed mode is a change too.
    let mut stricter = files.clone();
    stricter[0].mode = 0o400;
    assert!(write_atomically(&dir, &stricter, None).unwrap());
    assert_eq!(mode(&dir.join("a")), 0o400);
}

fn is_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    rustix::fs::statfs(path).unwrap().f_type as i64 == TMPFS_MAGIC
}

#[test]
fn volumes_are_made_under_the_pod_dir_and_torn_down() {
    let tmp = tempfile::tempdir().unwrap();
    let pods_dir = tmp.path().join("pods");
    let host_dir = tmp.path().join("host/created");
    let plans = [
        VolumePlan::Dir {
            name: "scratch".into(),
            kind: EmptyDir::Disk,
            fs_group: None,
        },
        VolumePlan::Dir {
            name: "cache".into(),
            kind: EmptyDir::Memory,
            fs_group: Some(2000),
        },
        VolumePlan::HostPath {
            name: "host".into(),
            path: host_dir.clone(),
            type_: HostPathType::DirectoryOrCreate,
        },
        VolumePlan::Files {
            name: "kube-api-access".into(),
            source: FileSource::Projected,
            files: vec![
                entry("token", "t"),
                entry("ca.crt", "ca"),
                entry("namespace", "shop"),
            ],
            fs_group: None,
        },
    ];
    let paths = make_volumes(&pods_dir.join("uid-1"), &plans).unwrap();
    let projected = pods_dir.join("uid-1/volumes/kubernetes.io~projected/kube-api-access");
    assert_eq!(paths["kube-api-access"], projected);
    assert_eq!(read(&projected, "namespace"), "shop");
    let scratch = pods_dir.join("uid-1/volumes/kubernetes.io~empty-dir/scratch");
    assert_eq!(paths["scratch"], scratch);
    assert_eq!(mode(&scratch), 0o777);
    assert_eq!(paths["host"], host_dir);
    assert!(host_dir.is_dir());
    assert_eq!(known_pod_dirs(&pods_dir), ["uid-1"]);
    assert_eq!(mode(&pods_dir.join("uid-1")), 0o750);
    assert_eq!(mode(&projected.join("..data/token")), 0o644);
    // Memory-backed: the Memory emptyDir and the projected token, never the disk.
    let cache = pods_dir.join("uid-1/volumes/kubernetes.io~empty-dir/cache");
    assert!(is_tmpfs(&cache) && is_tmpfs(&projected) && !is_tmpfs(&scratch));
    assert_eq!(mode(&cache), 0o2777);
    assert_eq!(fs::metadata(&cache).unwrap().gid(), 2000);
    fs::write(cache.join("kept"), "x").unwrap();

    // Setting up again changes nothing.
    let before = fs::read_link(projected.join(DATA_DIR)).unwrap();
    make_volumes(&pods_dir.join("uid-1"), &plans).unwrap();
    assert_eq!(fs::read_link(projected.join(DATA_DIR)).unwrap(), before);
    assert!(cache.join("kept").exists(), "the same tmpfs, not a new one");

    remove_pod_dir(&pods_dir, "uid-1").unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(pods_dir.to_str().unwrap()), "{mounts}");
    assert!(!pods_dir.join("uid-1").exists());
    assert!(host_dir.is_dir(), "a hostPath is never removed");
    assert!(known_pod_dirs(&pods_dir).is_empty());
    remove_pod_dir(&pods_dir, "uid-1").unwrap(); // Already gone: fine.
    assert!(remove_pod_dir(&pods_dir, "..").is_err());
}

#[test]
fn host_path_types_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    let check = |path: &Path, type_| {
        make_volumes(
            &tmp.path().join("pod"),
            &[VolumePlan::HostPath {
                name: "h".into(),
                path: path.to_path_buf(),
                type_,
            }],
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert_eq!(
        check(&file, HostPathType::Directory).unwrap_err(),
        format!(
            "MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not a directory",
            file.display()
        )
    );
    assert!(check(&file, HostPathType::File).is_ok());
    assert!(check(&tmp.path().join("missing"), HostPathType::File).is_err());
    assert!(check(&tmp.path().join("missing"), HostPathType::Unchecked).is_ok());
    assert!(check(&file, HostPathType::Socket).is_err());
    let created = tmp.path().join("new-file");
    assert!(check(&created, HostPathType::FileOrCreate).is_ok());
    assert!(created.is_file());
}

#[test]
fn sub_paths_that_lead_out_of_the_volume_are_refused_before_anything_is_mounted() {
    // Opening and mounting are tested in sub_path_mount and on the cluster;
    // here: the refusal names container, volume and the expanded subPath.
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    std::os::unix::fs::symlink("/etc", scratch.join("escape")).unwrap();
    let host_paths = BTreeMap::from([("scratch".to_string(), scratch.clone())]);
    let pod_dir = tmp.path().join("pod");
    let c = container(json!([
        {"name": "scratch", "mountPath": "/y"},
        {"name": "scratch", "mountPath": "/x", "subPathExpr": "$(LINK)/passwd"},
    ]));
    let err = prepare_mounts(&c, &host_paths, &envs(&[("LINK", "escape")]), &pod_dir).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container \"app\": subPath \"escape/passwd\" of volume \"scratch\" resolves outside its volume"
    );
    assert!(!pod_dir.exists(), "no mount target was made");
}
