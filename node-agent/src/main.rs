use std::process::ExitCode;

use clap::Parser;
use node_agent::config::{Command, Config, DEFAULT_CRI_ENDPOINT};
use node_agent::cri::CriClient;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    tracing::info!(?config, "node-agent starting");
    match config.command {
        Some(Command::RuntimeVersion) => {
            let endpoint = config
                .cri_endpoint
                .unwrap_or_else(|| DEFAULT_CRI_ENDPOINT.to_string());
            match CriClient::connect(&endpoint).await {
                Ok(mut cri) => match cri.version().await {
                    Ok(v) => {
                        println!(
                            "{} {} (CRI {})",
                            v.runtime_name, v.runtime_version, v.runtime_api_version
                        );
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
        None => match node_agent::agent::run(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "node-agent failed");
                eprintln!("node-agent: {err}");
                ExitCode::FAILURE
            }
        },
    }
}
