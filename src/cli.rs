//! The `kubexec` command line. Each subcommand is a variant of [`Command`] with its own
//! `clap::Args` struct, so adding one (`api`, `keys`) is one variant and one match arm.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::{api, crdgen, mcp_bridge, operator};

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
    /// Serve the api's MCP tools over stdio, for local agent clients (key from KUBEXEC_API_KEY).
    Mcp(McpArgs),
}

/// `kubexec mcp` flags. The key is read from `KUBEXEC_API_KEY` only: an argument would show in
/// `ps` and in shell history.
#[derive(Args, Debug)]
pub struct McpArgs {
    /// The api's URL, e.g. http://localhost:8080 (its MCP endpoint is <url>/mcp).
    #[arg(long, env = "KUBEXEC_API_URL")]
    pub url: String,
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
        Command::Mcp(args) => {
            // stdout is the protocol; logs go to stderr.
            init_logging();
            report("mcp", mcp_bridge::run(&args.url).await)
        }
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

/// `kubexec <command>: <error>` on stderr and exit 1 for a failed command.
fn report(command: &str, result: Result<(), impl std::error::Error>) -> ExitCode {
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

    #[test]
    fn api_and_keys_flags_parse() {
        let cli = Cli::try_parse_from([
            "kubexec",
            "api",
            "--listen",
            "0.0.0.0:9000",
            "--namespace-prefix",
            "",
            "--public-url",
            "https://run.example.com/",
        ])
        .expect("parses");
        let Command::Api(args) = cli.command else {
            panic!("expected the api command");
        };
        assert_eq!(args.listen.port(), 9000);
        assert_eq!(args.tenancy.namespace_of("acme"), "acme");
        assert_eq!(
            args.tenancy.keys_namespace,
            api::config::DEFAULT_KEYS_NAMESPACE
        );
        assert_eq!(
            args.public_url().as_deref(),
            Some("https://run.example.com")
        );
        assert_eq!(args.ready_timeout(), std::time::Duration::from_secs(60));

        let cli = Cli::try_parse_from([
            "kubexec", "keys", "create", "--tenant", "acme", "--tier", "paid",
        ])
        .expect("parses");
        let Command::Keys(api::KeysArgs {
            command: api::config::KeysCommand::Create { tenant, tier, .. },
            tenancy,
        }) = cli.command
        else {
            panic!("expected keys create");
        };
        assert_eq!((tenant.as_str(), tier), ("acme", api::tiers::Tier::Paid));
        assert_eq!(tenancy.namespace_of(&tenant), "kubexec-acme");
        assert!(Cli::try_parse_from([
            "kubexec", "keys", "create", "--tenant", "a", "--tier", "gold"
        ])
        .is_err());
    }

    /// Every variable the chart sets on a Deployment is one its command reads, and the
    /// replica's own name reaches the operator (Events name the replica that sent them).
    #[test]
    fn the_chart_sets_only_variables_the_commands_read() {
        let operator = include_str!("../charts/kubexec/templates/operator-deployment.yaml");
        let api = include_str!("../charts/kubexec/templates/api.yaml");
        for (template, subcommand) in [(operator, "operator"), (api, "api")] {
            let command = Cli::command();
            let args = command
                .find_subcommand(subcommand)
                .expect("the subcommand exists");
            let read: Vec<String> = args
                .get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
                .collect();
            let set: Vec<&str> = template
                .lines()
                .filter_map(|line| line.trim_start().strip_prefix("- "))
                .map(|item| item.trim_start_matches("{").trim_start())
                .filter_map(|item| item.strip_prefix("name: "))
                .map(|rest| rest.split([',', '}', ' ']).next().unwrap_or_default())
                .filter(|name| name.starts_with("KUBEXEC_"))
                .collect();
            assert!(
                !set.is_empty(),
                "{subcommand}: no variables found in the template"
            );
            for name in set {
                assert!(
                    read.iter().any(|r| r == name),
                    "the chart sets {name} on the {subcommand}, which reads only {read:?}"
                );
            }
        }
        let identity = Cli::command()
            .find_subcommand("operator")
            .and_then(|c| c.get_arguments().find(|a| a.get_id() == "identity"))
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned());
        assert_eq!(identity.as_deref(), Some("KUBEXEC_POD_NAME"));
        assert!(operator.contains("- name: KUBEXEC_POD_NAME\n              valueFrom: {fieldRef: {fieldPath: metadata.name}}"));
        let reporter = operator::context::reporter(Some("kubexec-operator-abc".into()));
        assert_eq!(reporter.instance.as_deref(), Some("kubexec-operator-abc"));
        assert_eq!(reporter.controller, operator::context::REPORTER);
    }
}
