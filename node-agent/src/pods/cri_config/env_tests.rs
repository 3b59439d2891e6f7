use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{json, Value};

use crate::pods::cri_config::env::*;
use crate::pods::cri_config::error::ConfigError;

fn pod(containers: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-0", "namespace": "shop", "uid": "u-1",
            "labels": {"app": "web"}, "annotations": {"team": "blue"}
        },
        "spec": {"nodeName": "node-a", "serviceAccountName": "robot", "containers": containers}
    }))
    .unwrap()
}

fn one(container: Value) -> Pod {
    pod(json!([container]))
}

const IPS: &[String] = &[];

fn facts() -> PodFacts<'static> {
    PodFacts {
        pod_ip: Some("10.1.0.5"),
        pod_ips: IPS,
        host_ip: Some("192.168.1.10"),
        node_allocatable_milli_cpu: 3500,
        node_allocatable_memory: 8 << 30,
        node_allocatable_ephemeral_storage: 50_000_000_000,
    }
}

fn sources() -> EnvSources {
    EnvSources {
        config_maps: BTreeMap::from([
            (
                "settings".to_string(),
                Some(BTreeMap::from([
                    ("MODE".to_string(), "fast".to_string()),
                    ("LEVEL".to_string(), "3".to_string()),
                    ("bad=key".to_string(), "x".to_string()),
                ])),
            ),
            ("gone".to_string(), None),
        ]),
        secrets: BTreeMap::from([(
            "creds".to_string(),
            Some(BTreeMap::from([(
                "PASSWORD".to_string(),
                b"hunter2".to_vec(),
            )])),
        )]),
    }
}

fn env_of(
    pod: &Pod,
    service_env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let container = &pod.spec.as_ref().unwrap().containers[0];
    container_env(pod, container, &facts(), &sources(), service_env)
        .map(|vars| vars.into_iter().map(|kv| (kv.key, kv.value)).collect())
}

fn var(name: &str, value_from: Value) -> Value {
    json!({"name": name, "valueFrom": value_from})
}

fn value_of(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[test]
fn env_overrides_env_from_which_overrides_service_links() {
    let pod = one(json!({
        "name": "app",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                    {"configMapRef": {"name": "settings"}}],
        "env": [{"name": "MODE", "value": "slow"}, {"name": "DB_SERVICE_HOST", "value": "db.local"}]
    }));
    let services = [
        ("DB_SERVICE_HOST".to_string(), "10.96.0.9".to_string()),
        ("MODE".to_string(), "from-service".to_string()),
    ];
    let env = env_of(&pod, &services).unwrap();
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["DB_SERVICE_HOST", "MODE", "CFG_LEVEL", "CFG_MODE", "LEVEL"],
        "each variable once, where first defined; `bad=key` cannot be a variable"
    );
    assert_eq!(value_of(&env, "MODE").as_deref(), Some("slow"));
    assert_eq!(value_of(&env, "CFG_MODE").as_deref(), Some("fast"));
    assert_eq!(
        value_of(&env, "DB_SERVICE_HOST").as_deref(),
        Some("db.local")
    );
}

#[test]
fn values_expand_what_is_defined_before_them() {
    let pod = one(json!({
        "name": "app",
        "envFrom": [{"secretRef": {"name": "creds"}}],
        "env": [
            {"name": "HOST", "value": "db"},
            {"name": "URL", "value": "pg://$(HOST):$(DB_SERVICE_PORT)/$(NAME)?p=$(PASSWORD)"},
            {"name": "NAME", "value": "orders"},
            {"name": "LITERAL", "value": "$$(HOST) costs $5 $(HOST"},
            {"name": "SELF", "value": "$(SELF)x"},
        ]
    }));
    let services = [("DB_SERVICE_PORT".to_string(), "5432".to_string())];
    let env = env_of(&pod, &services).unwrap();
    assert_eq!(
        value_of(&env, "URL").as_deref(),
        Some("pg://db:5432/$(NAME)?p=hunter2"),
        "NAME is defined after URL, so it stays as written"
    );
    assert_eq!(
        value_of(&env, "LITERAL").as_deref(),
        Some("$(HOST) costs $5 $(HOST")
    );
    assert_eq!(value_of(&env, "SELF").as_deref(), Some("$(SELF)x"));
}

#[test]
fn expansion_follows_the_kubelet() {
    let vars = BTreeMap::from([("A", "1"), ("B", "")]);
    let lookup = |name: &str| vars.get(name).copied();
    for (input, want) in [
        ("$(A)", "1"),
        ("$(A)$(B)$(A)", "11"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$(Z)", "$(Z)"),
        ("$(", "$("),
        ("$", "$"),
        ("a$b", "a$b"),
        ("$()", "$()"),
        ("é$(A)é", "é1é"),
    ] {
        assert_eq!(expand(input, lookup), want, "{input}");
    }
}

#[test]
fn field_refs_read_the_pod_and_the_node() {
    let fields = [
        ("metadata.name", "web-0"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "u-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['team']", "blue"),
        ("spec.nodeName", "node-a"),
        ("spec.serviceAccountName", "robot"),
        ("status.hostIP", "192.168.1.10"),
        ("status.hostIPs", "192.168.1.10"),
        ("status.podIP", "10.1.0.5"),
        ("status.podIPs", "10.1.0.5"),
    ];
    let env: Vec<Value> = fields
        .iter()
        .enumerate()
        .map(|(i, (path, _))| var(&format!("F{i}"), json!({"fieldRef": {"fieldPath": path}})))
        .collect();
    let env = env_of(&one(json!({"name": "app", "env": env})), &[]).unwrap();
    for (i, (path, want)) in fields.iter().enumerate() {
        assert_eq!(
            value_of(&env, &format!("F{i}")).as_deref(),
            Some(*want),
            "{path}"
        );
    }
}

#[test]
fn pod_ips_list_every_family() {
    let pod = one(json!({"name": "app", "env": [
        var("IP", json!({"fieldRef": {"fieldPath": "status.podIP"}})),
        var("IPS", json!({"fieldRef": {"fieldPath": "status.podIPs"}})),
    ]}));
    let ips = ["10.1.0.5".to_string(), "fd00::5".to_string()];
    let facts = PodFacts {
        pod_ips: &ips,
        pod_ip: None,
        ..facts()
    };
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let env = container_env(&pod, container, &facts, &sources(), &[]).unwrap();
    assert_eq!(env[0].value, "10.1.0.5");
    assert_eq!(env[1].value, "10.1.0.5,fd00::5");
}

#[test]
fn unknown_field_path_is_a_config_error() {
    let pod = one(json!({"name": "app", "env": [
        var("X", json!({"fieldRef": {"fieldPath": "spec.hostname"}})),
    ]}));
    let err = env_of(&pod, &[]).unwrap_err();
    assert_eq!(err.to_string(), "field label not supported: spec.hostname");
}

#[test]
fn resource_field_refs_divide_and_round_up() {
    let pod = pod(json!([
        {
            "name": "app",
            "resources": {"requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"memory": "1Gi"}},
            "env": [
                var("REQ_CPU", json!({"resourceFieldRef": {"resource": "requests.cpu"}})),
                var("REQ_CPU_M", json!({"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}})),
                var("REQ_MEM_MI", json!({"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}})),
                var("LIM_MEM", json!({"resourceFieldRef": {"resource": "limits.memory"}})),
                var("LIM_CPU", json!({"resourceFieldRef": {"resource": "limits.cpu"}})),
                var("LIM_CPU_M", json!({"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}})),
                var("LIM_EPH", json!({"resourceFieldRef": {"resource": "limits.ephemeral-storage", "divisor": "1G"}})),
                var("REQ_EPH", json!({"resourceFieldRef": {"resource": "requests.ephemeral-storage"}})),
                var("SIDE_MEM", json!({"resourceFieldRef": {"containerName": "side", "resource": "limits.memory", "divisor": "1Mi"}})),
            ]
        },
        {"name": "side", "resources": {"limits": {"memory": "64Mi"}}}
    ]));
    let env = env_of(&pod, &[]).unwrap();
    let got = |name: &str| value_of(&env, name).unwrap();
    assert_eq!(got("REQ_CPU"), "1", "250m of a core rounds up to 1");
    assert_eq!(got("REQ_CPU_M"), "250");
    assert_eq!(got("REQ_MEM_MI"), "100");
    assert_eq!(got("LIM_MEM"), (1u64 << 30).to_string());
    assert_eq!(
        got("LIM_CPU"),
        "4",
        "no limit: the node's 3500m, rounded up"
    );
    assert_eq!(got("LIM_CPU_M"), "3500");
    assert_eq!(got("LIM_EPH"), "50");
    assert_eq!(got("REQ_EPH"), "0");
    assert_eq!(got("SIDE_MEM"), "64");
}

#[test]
fn a_zero_divisor_as_the_api_server_defaults_it_means_one() {
    let pod = one(json!({"name": "app",
    "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1250m"}},
    "env": [
        var("CPU_LIMIT", json!({"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}})),
        var("CPU_REQUEST", json!({"resourceFieldRef": {"resource": "requests.cpu", "divisor": "0"}})),
        var("MEMORY_REQUEST", json!({"resourceFieldRef": {"resource": "requests.memory", "divisor": "0"}})),
        var("MEMORY_LIMIT", json!({"resourceFieldRef": {"resource": "limits.memory", "divisor": "0"}})),
    ]}));
    let env = env_of(&pod, &[]).unwrap();
    let got = |name: &str| value_of(&env, name).unwrap();
    assert_eq!(got("CPU_LIMIT"), "2");
    assert_eq!(got("CPU_REQUEST"), "1");
    assert_eq!(got("MEMORY_REQUEST"), (32u64 << 20).to_string());
    assert_eq!(
        got("MEMORY_LIMIT"),
        (8u64 << 30).to_string(),
        "the node's allocatable"
    );
}

#[test]
fn resource_field_ref_errors_name_the_problem() {
    let err = |value_from: Value| {
        env_of(
            &one(json!({"name": "app", "env": [var("X", value_from)]})),
            &[],
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        err(json!({"resourceFieldRef": {"containerName": "nope", "resource": "limits.cpu"}})),
        "container nope not found"
    );
    assert_eq!(
        err(json!({"resourceFieldRef": {"resource": "limits.gpu"}})),
        "unsupported container resource: limits.gpu"
    );
}

#[test]
fn config_map_and_secret_keys() {
    let pod = one(json!({"name": "app", "env": [
        var("MODE", json!({"configMapKeyRef": {"name": "settings", "key": "MODE"}})),
        var("PASS", json!({"secretKeyRef": {"name": "creds", "key": "PASSWORD"}})),
        var("OPT_KEY", json!({"configMapKeyRef": {"name": "settings", "key": "nope", "optional": true}})),
        var("OPT_CM", json!({"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}})),
        var("OPT_SECRET", json!({"secretKeyRef": {"name": "unlisted", "key": "k", "optional": true}})),
    ], "envFrom": [{"secretRef": {"name": "gone-too", "optional": true}}]}));
    let env = env_of(&pod, &[]).unwrap();
    assert_eq!(
        env,
        [
            ("MODE".to_string(), "fast".to_string()),
            ("PASS".to_string(), "hunter2".to_string())
        ],
        "optional sources that are missing leave their variables out"
    );
}

#[test]
fn missing_required_sources_give_the_kubelets_messages() {
    let err = |container: Value| env_of(&one(container), &[]).unwrap_err();
    let cases = [
        (
            json!({"name": "a", "env": [var("X", json!({"configMapKeyRef": {"name": "gone", "key": "k"}}))]}),
            "configmap \"gone\" not found",
        ),
        (
            json!({"name": "a", "env": [var("X", json!({"configMapKeyRef": {"name": "settings", "key": "k"}}))]}),
            "couldn't find key k in ConfigMap shop/settings",
        ),
        (
            json!({"name": "a", "env": [var("X", json!({"secretKeyRef": {"name": "nope", "key": "k"}}))]}),
            "secret \"nope\" not found",
        ),
        (
            json!({"name": "a", "env": [var("X", json!({"secretKeyRef": {"name": "creds", "key": "k"}}))]}),
            "couldn't find key k in Secret shop/creds",
        ),
        (
            json!({"name": "a", "envFrom": [{"configMapRef": {"name": "gone"}}]}),
            "configmap \"gone\" not found",
        ),
        (
            json!({"name": "a", "envFrom": [{"secretRef": {"name": "nope"}}]}),
            "secret \"nope\" not found",
        ),
    ];
    for (container, message) in cases {
        let error = err(container);
        assert_eq!(error.to_string(), message);
        assert_eq!(error.reason(), "CreateContainerConfigError");
    }
}

#[test]
fn references_come_from_every_container() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {
            "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
            "containers": [{"name": "app",
                "env": [var("A", json!({"configMapKeyRef": {"name": "cm", "key": "k"}})),
                        var("B", json!({"secretKeyRef": {"name": "s", "key": "k"}})),
                        var("C", json!({"fieldRef": {"fieldPath": "metadata.name"}}))],
                "envFrom": [{"secretRef": {"name": "s2"}}, {"configMapRef": {"name": "cm"}}]}]
        }
    }))
    .unwrap();
    assert_eq!(
        referenced_config_maps(&pod).into_iter().collect::<Vec<_>>(),
        ["cm", "init-cm"]
    );
    assert_eq!(
        referenced_secrets(&pod).into_iter().collect::<Vec<_>>(),
        ["s", "s2"]
    );
}

fn service(namespace: &str, name: &str, cluster_ip: &str, ports: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": cluster_ip, "ports": ports}
    }))
    .unwrap()
}

#[test]
fn service_links_follow_docker_names() {
    let services = [service(
        "shop",
        "my-svc",
        "10.96.1.2",
        json!([{"port": 80}]),
    )];
    let env = service_env(&services, "shop", true);
    let want = [
        ("MY_SVC_SERVICE_HOST", "10.96.1.2"),
        ("MY_SVC_SERVICE_PORT", "80"),
        ("MY_SVC_PORT", "tcp://10.96.1.2:80"),
        ("MY_SVC_PORT_80_TCP", "tcp://10.96.1.2:80"),
        ("MY_SVC_PORT_80_TCP_PROTO", "tcp"),
        ("MY_SVC_PORT_80_TCP_PORT", "80"),
        ("MY_SVC_PORT_80_TCP_ADDR", "10.96.1.2"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env, want);
}

#[test]
fn named_and_udp_ports_get_their_own_variables() {
    let services = [service(
        "shop",
        "dns",
        "fd00::a",
        json!([{"name": "dns-udp", "port": 53, "protocol": "UDP"}, {"name": "metrics", "port": 9153}]),
    )];
    let env = service_env(&services, "shop", true);
    let get = |k: &str| value_of(&env, k);
    assert_eq!(get("DNS_SERVICE_PORT").as_deref(), Some("53"));
    assert_eq!(get("DNS_SERVICE_PORT_DNS_UDP").as_deref(), Some("53"));
    assert_eq!(get("DNS_SERVICE_PORT_METRICS").as_deref(), Some("9153"));
    assert_eq!(get("DNS_PORT").as_deref(), Some("udp://[fd00::a]:53"));
    assert_eq!(get("DNS_PORT_53_UDP_PROTO").as_deref(), Some("udp"));
    assert_eq!(
        get("DNS_PORT_9153_TCP").as_deref(),
        Some("tcp://[fd00::a]:9153")
    );
}

#[test]
fn service_links_cover_the_namespace_and_always_the_api_server() {
    let services = [
        service(
            "default",
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443}]),
        ),
        service("shop", "db", "10.96.0.9", json!([{"port": 5432}])),
        service("other", "cache", "10.96.0.7", json!([{"port": 6379}])),
        service("shop", "headless", "None", json!([{"port": 80}])),
        serde_json::from_value(json!({"metadata": {"name": "ext", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}))
        .unwrap(),
    ];
    let hosts = |env: Vec<(String, String)>| -> Vec<String> {
        env.into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ends_with("_SERVICE_HOST"))
            .collect()
    };
    assert_eq!(
        hosts(service_env(&services, "shop", true)),
        ["DB_SERVICE_HOST", "KUBERNETES_SERVICE_HOST"]
    );
    assert_eq!(
        hosts(service_env(&services, "shop", false)),
        ["KUBERNETES_SERVICE_HOST"],
        "enableServiceLinks: false keeps only the API server's"
    );
    let api = service_env(&services, "other", false);
    assert_eq!(
        value_of(&api, "KUBERNETES_SERVICE_PORT_HTTPS").as_deref(),
        Some("443")
    );
    assert_eq!(
        value_of(&api, "KUBERNETES_PORT_443_TCP_ADDR").as_deref(),
        Some("10.96.0.1")
    );
}
