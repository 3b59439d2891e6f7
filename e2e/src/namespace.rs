//! What most end-to-end tests start from: a namespace of their own and
//! objects applied as JSON.
use std::time::Duration;

use crate::backends::unique_name;
use crate::kubectl::{apply, eventually, get_json, kubectl, require_cluster};

/// A namespace of the test's own, deleted (without waiting) when dropped.
pub struct Namespace(pub String);

impl Namespace {
    /// Creates it (the cluster must be up) and waits for its `default`
    /// ServiceAccount, which the ServiceAccount controller creates and pods need.
    pub fn new(what: &str) -> Self {
        require_cluster();
        let name = unique_name(what);
        kubectl(&["create", "namespace", &name]).expect_ok("create namespace");
        eventually(
            Duration::from_secs(30),
            "the default ServiceAccount",
            || get_json("serviceaccount", "default", Some(&name)).map(|_| ()),
        );
        Self(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
    }
}

/// Applies an object written as JSON, failing the test when kubectl refuses it.
pub fn apply_json(object: serde_json::Value) {
    apply(&object.to_string()).expect_ok("apply");
}
