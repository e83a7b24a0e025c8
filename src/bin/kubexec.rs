//! `kubexec`: see [`kubexec::cli`].

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kubexec::cli::run(kubexec::cli::Cli::parse()).await
}
