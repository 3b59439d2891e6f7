mod config;

use std::process::ExitCode;

use clap::Parser;
use config::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    tracing::info!(?config, "nodeconfig-operator starting");
    eprintln!("nodeconfig-operator: the controllers are not built yet; see `nodeconfig-operator --help`");
    ExitCode::from(2)
}
