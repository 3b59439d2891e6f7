//! The operator's defaults, `config.yaml` of the nodeconfig-defaults ConfigMap, which
//! tests read and change (and put back).

use serde_json::json;

use crate::kubectl::{kubectl, Run};

const NAMESPACE: &str = "nodeconfig-system";
const CONFIGMAP: &str = "nodeconfig-defaults";

/// The defaults document as the cluster has it.
pub fn read() -> String {
    kubectl(&[
        "get",
        "configmap",
        CONFIGMAP,
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.config\\.yaml}",
    ])
    .expect_ok("read the operator's defaults")
}

/// Replaces the defaults document with `yaml`.
pub fn write(yaml: &str) -> Run {
    let cm = json!({"data": {"config.yaml": yaml}}).to_string();
    kubectl(&[
        "patch",
        "configmap",
        CONFIGMAP,
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        &cm,
    ])
}
