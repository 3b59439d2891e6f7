use std::process::ExitCode;

use clap::Parser;
use node_agent::cli::{Command, Config, DEFAULT_CRI_ENDPOINT};
use node_agent::edge::cri::CriClient;
use node_agent::proxy::{Iptables, IptablesCommand, Proxier, Table};

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
        Some(Command::Cleanup) => cleanup(),
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

/// `node-agent cleanup`: removes the proxy's rules in this network namespace
/// and prints, per table, the chains and jumps that went.
fn cleanup() -> ExitCode {
    let mut iptables = IptablesCommand::new();
    let installed = match iptables.installed() {
        Ok(installed) => installed,
        Err(err) => {
            eprintln!("node-agent: reading the rules: {err}");
            return ExitCode::FAILURE;
        }
    };
    if installed.is_empty() {
        println!("no rules of node-agent in this network namespace");
        return ExitCode::SUCCESS;
    }
    for table in Table::ALL {
        let rules = installed.table(table);
        for (chain, jumps) in &rules.jumps {
            for jump in jumps {
                println!("{}: -A {chain} {jump}", table.name());
            }
        }
        for (chain, chain_rules) in &rules.chains {
            println!(
                "{}: chain {chain} ({} rules)",
                table.name(),
                chain_rules.len()
            );
        }
    }
    match Proxier::new(iptables).cleanup() {
        Ok(removed) => {
            println!(
                "removed {removed} rules in {} chains",
                installed.chain_count()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("node-agent: removing the rules: {err}");
            ExitCode::FAILURE
        }
    }
}
