//! The images of nodeconfig's binaries that `e2e/cluster up` builds are in every
//! node's containerd and run there (binary and shared libraries complete).

use std::process::Command;

use nodeconfig_e2e::node::{cri_socket, node_names};

#[test]
fn nodeconfig_images_run_in_every_node() {
    let version = env!("CARGO_PKG_VERSION");
    for node in node_names() {
        for binary in ["node-agent", "nodeconfig-operator"] {
            let image = format!("nodeconfig.local/{binary}:{version}");
            let id = format!("e2e-image-check-{binary}-{}", std::process::id());
            let out = Command::new("ctr")
                .arg("--address")
                .arg(cri_socket(&node))
                .args([
                    "-n",
                    "k8s.io",
                    "run",
                    "--rm",
                    &image,
                    &id,
                    &format!("/usr/local/bin/{binary}"),
                    "--version",
                ])
                .output()
                .expect("run ctr");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.trim() == format!("{binary} {version}"),
                "{image} on {node}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
