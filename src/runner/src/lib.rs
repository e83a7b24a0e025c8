//! The in-sandbox runner of kubexec.
//!
//! One static binary with several roles: PID 1 of the sandbox (`init`), the entry point of one
//! execution (`exec`), a channel of many executions (`serve`), and small helpers for files and processes. The operator and the api use
//! this library for the wire types in [`protocol`] (framing, [`protocol::ExecSpec`],
//! [`protocol::RunnerEvent`], [`protocol::FrameDecoder`]).

pub mod base64;
pub mod capture;
pub mod cgroup;
pub mod changed_files;
pub mod cli;
pub mod clock;
pub mod error;
pub mod exec;
pub mod files;
pub mod follow;
pub mod follow_run;
pub mod gc;
pub mod init;
pub mod install;
pub mod invocation;
pub mod listing;
pub mod output_pipe;
pub mod paths;
pub mod pids;
pub mod process;
pub mod procfs;
pub mod protocol;
pub mod run_dir;
pub mod serve;
pub mod signals;
pub mod sink;
pub mod staged;
pub mod supervise;
pub mod write_files;

#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
