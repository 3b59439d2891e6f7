use std::process::ExitCode;

use clap::Parser;
use node_agent::config::{Command, Config};
use node_agent::cri::CriClient;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    tracing::info!(?config, "node-agent starting");
    match config.command {
        Some(Command::RuntimeVersion) => {
            let endpoint = config
                .cri_endpoint
                .unwrap_or_else(|| "unix:///run/containerd/containerd.sock".to_string());
            match CriClient::connect(&endpoint).await {
                Ok(mut cri) => match cri.version().await {
                    Ok(v) => {
                        println!("{} {} (CRI {})", v.runtime_name, v.runtime_version, v.runtime_api_version);
                        ExitCode::SUCCESS
                    }
                    Err(err) => {
                        eprintln!("node-agent: {err}");
                        ExitCode::FAILURE
                    }
                },
                Err(err) => {
                    eprintln!("node-agent: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            eprintln!("node-agent: the agent's loops are not built yet; see `node-agent --help`");
            ExitCode::from(2)
        }
    }
}
