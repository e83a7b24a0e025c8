//! The `kubexec` command line. Each subcommand is a variant of [`Command`] with its own
//! `clap::Args` struct, so adding one (`api`, `keys`) is one variant and one match arm.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::{api, crdgen, operator};

/// Kubernetes-native code-execution sandboxes.
#[derive(Parser, Debug)]
#[command(name = "kubexec", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator (against KUBECONFIG, or in-cluster).
    Operator(operator::OperatorArgs),
    /// Print the CustomResourceDefinitions as YAML, or write them to a directory.
    Crdgen(CrdgenArgs),
    /// Run the REST API (buntime-compatible) against KUBECONFIG, or in-cluster.
    Api(api::ApiArgs),
    /// Manage API keys: create (prints the key once), list, revoke.
    Keys(api::KeysArgs),
}

/// `kubexec crdgen` flags.
#[derive(Args, Debug)]
pub struct CrdgenArgs {
    /// Write `<dir>/<plural>.kubexec.dev.yaml` for each CRD instead of printing to stdout.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// JSON logs on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests) is harmless, so its error is ignored.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(true)
        .try_init();
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crdgen(args) => crdgen_command(&args),
        Command::Api(args) => {
            init_logging();
            report("api", api::run(args).await)
        }
        Command::Keys(args) => report("keys", api::keys_cli::run(args).await),
        Command::Operator(args) => {
            init_logging();
            match operator::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn report(command: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubexec {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn crdgen_command(args: &CrdgenArgs) -> ExitCode {
    let result = match &args.dir {
        Some(dir) => crdgen::write_dir(dir).map(|paths| {
            for path in paths {
                eprintln!("wrote {}", path.display());
            }
        }),
        None => crdgen::all_yaml().map(|yaml| print!("{yaml}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubexec crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn operator_flags_have_defaults() {
        let cli =
            Cli::try_parse_from(["kubexec", "operator", "--concurrency", "4"]).expect("parses");
        let Command::Operator(args) = cli.command else {
            panic!("expected the operator command");
        };
        assert_eq!(args.concurrency, 4);
        let config = args.sandbox_config().expect("valid defaults");
        assert_eq!(config.runner_image, "localhost/kubexec-runner:dev");
        assert!(
            Cli::try_parse_from(["kubexec", "operator", "--request-ratio", "2"])
                .map(|c| match c.command {
                    Command::Operator(a) => a.sandbox_config().is_err(),
                    _ => false,
                })
                .unwrap_or(false)
        );
    }
}
