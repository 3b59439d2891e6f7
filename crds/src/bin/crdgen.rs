//! Prints the NodeConfig CRD, or with `--write` rewrites the checked-in file.

use std::path::Path;
use std::process::ExitCode;

use nodeconfig_crds::crd::{crd_yaml, CRD_FILE};

fn main() -> ExitCode {
    let yaml = match crd_yaml() {
        Ok(yaml) => yaml,
        Err(err) => {
            eprintln!("crdgen: cannot render the CRD: {err}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args().nth(1).as_deref() {
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some("--write") => {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(CRD_FILE);
            match std::fs::write(&path, yaml) {
                Ok(()) => {
                    eprintln!("crdgen: wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("crdgen: cannot write {}: {err}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Some(other) => {
            eprintln!("crdgen: unknown argument '{other}'; usage: crdgen [--write]");
            ExitCode::FAILURE
        }
    }
}
