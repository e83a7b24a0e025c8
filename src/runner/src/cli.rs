//! Command-line parsing and dispatch. The CLI is small and its callers are programs, so argv is
//! parsed by hand instead of pulling in a parser crate.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::paths::Workspace;
use crate::protocol::{DEFAULT_WORKSPACE, INIT_GRACE_ENV, PROTOCOL_VERSION, WORKSPACE_ENV};
use crate::run_dir::RunDir;
use crate::sink::EventSink;
use crate::write_files::WriteLimits;
use crate::{
    exec, init, install, listing, output_pipe, process, serve, signals, staged, supervise,
    write_files,
};

pub const USAGE: &str = "\
usage: kubexec-runner <command> [args]

  init                                    run as PID 1: reap, forward signals, stay up
  exec                                    run one framed ExecSpec from stdin; framed events on stdout
  serve                                   many exec/follow requests over stdin/stdout (a channel)
  write-files [ROOT] [--max-file-bytes N] [--max-files N]
                                          streamed all-or-nothing upload from stdin
  stage NAME --size N                     store N bytes of stdin as staged code NAME for a later exec
  ls [PATH] [--recursive]                 list files as JSON
  cat PATH [--offset N] [--max-bytes N]   print a file's bytes
  ps                                      list processes as JSON
  kill PID [--signal SIG] [--group]       signal a process (or its process group)
  install DEST                            copy this binary to DEST (mode 0755)
  result RUN_ID | --name NAME             stored outcome or state of a run as JSON (by name: with its runId)
  follow RUN_ID [--wait-seconds N] [--stdout-offset N] [--stderr-offset N]
                                          a run's output from the start (or the offsets), then its result (framed)
  runs                                    the named runs of the workspace as JSON, newest first
  gc --max-age-seconds N --max-bytes N --keep-seconds N
                                          collect old run output and old run directories; report as JSON
  drain-output --to FILE --max-bytes N    (internal) append stdin to FILE up to N bytes, discard the rest
  --version

ls, cat, result, runs, follow, gc, stage and write-files take --workspace DIR (default $KUBEXEC_WORKSPACE or /workspace).
Helpers print JSON on stdout; on failure they print {\"code\",\"message\"} JSON on stderr and exit
non-zero (2 for usage errors).
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Init {
        grace: Duration,
    },
    Exec,
    Serve,
    ServeExec,
    WriteFiles {
        root: PathBuf,
        limits: WriteLimits,
    },
    Stage {
        workspace: PathBuf,
        name: String,
        size: u64,
    },
    Ls {
        workspace: PathBuf,
        path: String,
        recursive: bool,
    },
    Cat {
        workspace: PathBuf,
        path: String,
        offset: u64,
        max_bytes: Option<u64>,
    },
    Ps,
    Kill {
        pid: i32,
        signal: i32,
        group: bool,
    },
    Install {
        destination: PathBuf,
    },
    Result {
        workspace: PathBuf,
        run_id: String,
    },
    ResultByName {
        workspace: PathBuf,
        name: String,
    },
    Follow {
        workspace: PathBuf,
        run_id: String,
        wait: Duration,
        offsets: crate::follow_run::Offsets,
    },
    Gc {
        workspace: PathBuf,
        limits: crate::gc::GcLimits,
    },
    Runs {
        workspace: PathBuf,
    },
    DrainOutput {
        to: PathBuf,
        max_bytes: u64,
    },
    Version,
    Help,
}

/// Arguments split into positionals, `--flag`s and `--option value` / `--option=value`.
#[derive(Debug, Default)]
struct Parsed {
    positionals: Vec<String>,
    flags: Vec<String>,
    options: BTreeMap<String, String>,
}

impl Parsed {
    fn parse(args: &[String], valued: &[&str], flags: &[&str]) -> Result<Self> {
        let mut parsed = Parsed::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                parsed.positionals.push(arg.clone());
                continue;
            };
            let (name, inline) = match name.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (name, None),
            };
            if valued.contains(&name) {
                let value = inline
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| Error::Usage(format!("--{name} needs a value")))?;
                parsed.options.insert(name.to_string(), value);
            } else if flags.contains(&name) && inline.is_none() {
                parsed.flags.push(name.to_string());
            } else {
                return Err(Error::Usage(format!("unknown option {arg}")));
            }
        }
        Ok(parsed)
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>> {
        self.options
            .get(name)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| Error::Usage(format!("--{name} must be a number, got {value:?}")))
            })
            .transpose()
    }

    fn positional(&self, index: usize, what: &str) -> Result<String> {
        self.positionals
            .get(index)
            .cloned()
            .ok_or_else(|| Error::Usage(format!("missing {what}")))
    }

    fn at_most(&self, count: usize) -> Result<()> {
        match self.positionals.get(count) {
            Some(extra) => Err(Error::Usage(format!("unexpected argument {extra:?}"))),
            None => Ok(()),
        }
    }

    fn workspace(&self) -> PathBuf {
        self.options
            .get("workspace")
            .cloned()
            .or_else(|| std::env::var(WORKSPACE_ENV).ok())
            .unwrap_or_else(|| DEFAULT_WORKSPACE.into())
            .into()
    }
}

/// Parses argv without the program name.
pub fn parse(args: &[String]) -> Result<Command> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    let parse = |valued: &[&str], flags: &[&str]| Parsed::parse(rest, valued, flags);
    let command = match command.as_str() {
        "init" => {
            parse(&[], &[])?.at_most(0)?;
            let grace = std::env::var(INIT_GRACE_ENV)
                .ok()
                .and_then(|s| s.parse().ok());
            Command::Init {
                grace: grace.map_or(init::DEFAULT_GRACE, Duration::from_secs),
            }
        }
        "exec" => {
            parse(&[], &[])?.at_most(0)?;
            Command::Exec
        }
        "serve" => {
            parse(&[], &[])?.at_most(0)?;
            Command::Serve
        }
        crate::serve::SERVE_EXEC_COMMAND => {
            parse(&[], &[])?.at_most(0)?;
            Command::ServeExec
        }
        "write-files" => {
            let p = parse(&["workspace", "max-file-bytes", "max-files"], &[])?;
            p.at_most(1)?;
            let root = p
                .positionals
                .first()
                .map(PathBuf::from)
                .unwrap_or_else(|| p.workspace());
            let limits = WriteLimits {
                max_file_bytes: p.number("max-file-bytes")?,
                max_files: p.number("max-files")?,
            };
            Command::WriteFiles { root, limits }
        }
        "stage" => {
            let p = parse(&["workspace", "size"], &[])?;
            p.at_most(1)?;
            Command::Stage {
                workspace: p.workspace(),
                name: p.positional(0, "NAME")?,
                size: p
                    .number("size")?
                    .ok_or_else(|| Error::Usage("missing --size".into()))?,
            }
        }
        "ls" => {
            let p = parse(&["workspace"], &["recursive"])?;
            p.at_most(1)?;
            let path = p.positionals.first().cloned().unwrap_or_else(|| ".".into());
            Command::Ls {
                workspace: p.workspace(),
                path,
                recursive: p.flag("recursive"),
            }
        }
        "cat" => {
            let p = parse(&["workspace", "offset", "max-bytes"], &[])?;
            p.at_most(1)?;
            Command::Cat {
                workspace: p.workspace(),
                path: p.positional(0, "PATH")?,
                offset: p.number("offset")?.unwrap_or(0),
                max_bytes: p.number("max-bytes")?,
            }
        }
        "ps" => {
            parse(&[], &[])?.at_most(0)?;
            Command::Ps
        }
        "kill" => {
            let p = parse(&["signal"], &["group"])?;
            p.at_most(1)?;
            let pid = p.positional(0, "PID")?;
            let pid = pid
                .parse()
                .map_err(|_| Error::Usage(format!("PID must be a number, got {pid:?}")))?;
            let signal = p
                .options
                .get("signal")
                .map_or(Ok(libc::SIGTERM), |s| signals::parse_signal(s))?;
            Command::Kill {
                pid,
                signal,
                group: p.flag("group"),
            }
        }
        "install" => {
            let p = parse(&[], &[])?;
            p.at_most(1)?;
            Command::Install {
                destination: p.positional(0, "DEST")?.into(),
            }
        }
        "result" => {
            let p = parse(&["workspace", "name"], &[])?;
            match p.options.get("name") {
                Some(name) => {
                    p.at_most(0)?;
                    Command::ResultByName {
                        workspace: p.workspace(),
                        name: name.clone(),
                    }
                }
                None => {
                    p.at_most(1)?;
                    Command::Result {
                        workspace: p.workspace(),
                        run_id: p.positional(0, "RUN_ID")?,
                    }
                }
            }
        }
        "follow" => {
            let p = parse(
                &[
                    "workspace",
                    "wait-seconds",
                    "stdout-offset",
                    "stderr-offset",
                ],
                &[],
            )?;
            p.at_most(1)?;
            Command::Follow {
                workspace: p.workspace(),
                run_id: p.positional(0, "RUN_ID")?,
                wait: p
                    .number("wait-seconds")?
                    .map_or(crate::follow_run::DEFAULT_WAIT, Duration::from_secs),
                offsets: crate::follow_run::Offsets {
                    stdout: p.number("stdout-offset")?.unwrap_or(0),
                    stderr: p.number("stderr-offset")?.unwrap_or(0),
                },
            }
        }
        "runs" => {
            let p = parse(&["workspace"], &[])?;
            p.at_most(0)?;
            Command::Runs {
                workspace: p.workspace(),
            }
        }
        "gc" => {
            let p = parse(
                &["workspace", "max-age-seconds", "max-bytes", "keep-seconds"],
                &[],
            )?;
            p.at_most(0)?;
            let required = |name: &str| -> Result<u64> {
                p.number(name)?
                    .ok_or_else(|| Error::Usage(format!("missing --{name}")))
            };
            Command::Gc {
                workspace: p.workspace(),
                limits: crate::gc::GcLimits {
                    max_age: Duration::from_secs(required("max-age-seconds")?),
                    max_bytes: required("max-bytes")?,
                    keep: Duration::from_secs(required("keep-seconds")?),
                },
            }
        }
        output_pipe::DRAIN_COMMAND => {
            let p = parse(&["to", "max-bytes"], &[])?;
            p.at_most(0)?;
            let to = p
                .options
                .get("to")
                .ok_or_else(|| Error::Usage("missing --to".into()))?;
            Command::DrainOutput {
                to: to.into(),
                max_bytes: p
                    .number("max-bytes")?
                    .ok_or_else(|| Error::Usage("missing --max-bytes".into()))?,
            }
        }
        "--version" | "version" => Command::Version,
        "--help" | "-h" | "help" => Command::Help,
        other => return Err(Error::Usage(format!("unknown command {other:?}"))),
    };
    Ok(command)
}

/// Runs the CLI and returns the process exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Option<Vec<String>> = args
        .into_iter()
        .skip(1)
        .map(|a| a.into_string().ok())
        .collect();
    let command = args
        .ok_or_else(|| Error::Usage("arguments must be UTF-8".into()))
        .and_then(|args| parse(&args));
    match command.and_then(dispatch) {
        Ok(()) => 0,
        Err(error) => {
            // Not eprintln!: it panics when stderr is gone, as it may be after an exec stream
            // was torn down.
            let json = serde_json::to_string(&error.to_wire()).unwrap_or_default();
            let mut stderr = io::stderr().lock();
            let _ = writeln!(stderr, "{json}");
            if matches!(error, Error::Usage(_)) {
                let _ = write!(stderr, "{USAGE}");
            }
            error.exit_status()
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    // Every runner process (PID 1, each exec, each helper) keeps the runner's own process limit
    // and speaks for the sandbox on the exec stream: none may be taken over by user code.
    supervise::protect_from_user_code();
    match command {
        Command::Init { grace } => init::run(grace),
        Command::Exec => {
            let mut stdin = BufReader::new(io::stdin().lock());
            let mut sink = EventSink::new(io::stdout().lock());
            // The error frame is already on stdout; the non-zero exit tells the runner failed.
            exec::run(&mut stdin, &mut sink)
        }
        Command::Serve => {
            let mut stdin = BufReader::new(io::stdin().lock());
            serve::serve(&mut stdin, io::stdout(), serve::own_binary())
        }
        Command::ServeExec => serve::serve_exec(),
        Command::WriteFiles { root, limits } => {
            let workspace = Workspace::open(&root)?;
            let mut stdin = BufReader::new(io::stdin().lock());
            print_json(&write_files::write_files(&workspace, &mut stdin, limits)?)
        }
        Command::Stage {
            workspace,
            name,
            size,
        } => {
            let workspace = Workspace::open(&workspace)?;
            let mut stdin = io::stdin().lock();
            print_json(&staged::stage(&workspace, &name, &mut stdin, size)?)
        }
        Command::Ls {
            workspace,
            path,
            recursive,
        } => print_json(&listing::list(
            &Workspace::open(&workspace)?,
            &path,
            recursive,
        )?),
        Command::Cat {
            workspace,
            path,
            offset,
            max_bytes,
        } => {
            let workspace = Workspace::open(&workspace)?;
            listing::cat(
                &workspace,
                &path,
                offset,
                max_bytes,
                &mut io::stdout().lock(),
            )
            .map(drop)
        }
        Command::Ps => print_json(&process::list_processes()?),
        Command::Kill { pid, signal, group } => print_json(&process::signal(pid, signal, group)?),
        Command::Install { destination } => print_json(&install::install(&destination)?),
        Command::Result { workspace, run_id } => {
            let workspace = Workspace::open(&workspace)?;
            print_json(&RunDir::new(workspace.root(), &run_id)?.status()?)
        }
        Command::ResultByName { workspace, name } => {
            let workspace = Workspace::open(&workspace)?;
            let run_id = crate::run_dir::lookup_name(workspace.root(), &name)?;
            let status = match &run_id {
                Some(run_id) => RunDir::new(workspace.root(), run_id)?.status()?,
                None => crate::protocol::RunStatus::Unknown,
            };
            print_json(&crate::protocol::NamedRun { run_id, status })
        }
        Command::Follow {
            workspace,
            run_id,
            wait,
            offsets,
        } => {
            crate::follow_run::follow_from(&workspace, &run_id, wait, offsets, io::stdout().lock())
        }
        Command::Runs { workspace } => {
            let workspace = Workspace::open(&workspace)?;
            print_json(&crate::run_dir::list_named(workspace.root()))
        }
        Command::Gc { workspace, limits } => {
            let workspace = Workspace::open(&workspace)?;
            print_json(&crate::gc::collect(
                workspace.root(),
                limits,
                crate::clock::now_unix_ms(),
            )?)
        }
        Command::DrainOutput { to, max_bytes } => {
            output_pipe::drain(&mut io::stdin().lock(), &to, max_bytes)
        }
        Command::Version => print_line(&format!(
            "kubexec-runner {} (protocol {PROTOCOL_VERSION})",
            env!("CARGO_PKG_VERSION")
        )),
        Command::Help => print_line(USAGE.trim_end()),
    }
}

fn print_json(value: &impl Serialize) -> Result<()> {
    print_line(&serde_json::to_string(value).unwrap_or_default())
}

fn print_line(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            context: "writing to stdout".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_helpers() {
        assert_eq!(parse(&args("exec")).ok(), Some(Command::Exec));
        assert_eq!(parse(&args("serve")).ok(), Some(Command::Serve));
        assert_eq!(
            parse(&args("kill 42 --signal KILL --group")).ok(),
            Some(Command::Kill {
                pid: 42,
                signal: libc::SIGKILL,
                group: true
            })
        );
        assert_eq!(
            parse(&args("kill 42")).ok(),
            Some(Command::Kill {
                pid: 42,
                signal: libc::SIGTERM,
                group: false
            })
        );
        assert_eq!(
            parse(&args("cat a.txt --max-bytes=10 --workspace /w")).ok(),
            Some(Command::Cat {
                workspace: "/w".into(),
                path: "a.txt".into(),
                offset: 0,
                max_bytes: Some(10)
            })
        );
        assert_eq!(
            parse(&args("ls src --recursive --workspace /w")).ok(),
            Some(Command::Ls {
                workspace: "/w".into(),
                path: "src".into(),
                recursive: true
            })
        );
        assert_eq!(
            parse(&args("write-files /data --max-files 3")).ok(),
            Some(Command::WriteFiles {
                root: "/data".into(),
                limits: WriteLimits {
                    max_file_bytes: None,
                    max_files: Some(3)
                }
            })
        );
        assert_eq!(
            parse(&args("install /kubexec/bin/kubexec-runner")).ok(),
            Some(Command::Install {
                destination: "/kubexec/bin/kubexec-runner".into()
            })
        );
        assert_eq!(parse(&args("--version")).ok(), Some(Command::Version));
    }

    #[test]
    fn rejects_bad_usage() {
        for line in [
            "bogus",
            "kill",
            "kill x",
            "kill 3 --signal NOPE",
            "cat",
            "ls a b",
            "ls --nope",
            "cat a --max-bytes",
            "exec extra",
            "serve extra",
        ] {
            assert!(matches!(parse(&args(line)), Err(Error::Usage(_))), "{line}");
        }
    }
}
