//! `ps` and `kill`: the processes of the sandbox, background ones included.

use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::procfs;
use crate::protocol::{ProcessInfo, ProcessList, Signalled};

/// Every process visible in /proc except the runner's own (PID 1, this `ps`, other runner
/// processes such as in-flight `exec`s) and kernel threads.
pub fn list_processes() -> Result<ProcessList> {
    let pids = procfs::list_pids().map_err(|source| Error::Io {
        context: "listing /proc".into(),
        source,
    })?;
    let own_exe = std::fs::read_link("/proc/self/exe").ok();
    let own_comm = procfs::read_stat(std::process::id() as i32).map(|stat| stat.comm);
    let boot_ms = procfs::boot_time_secs().unwrap_or(0) * 1000;
    let ticks = procfs::clock_ticks_per_sec();
    let page = procfs::page_size();
    let me = std::process::id() as i32;

    let processes = pids
        .into_iter()
        .filter(|&pid| pid != 1 && pid != me)
        // A process may exit between the directory listing and these reads; it is skipped.
        .filter_map(|pid| {
            let stat = procfs::read_stat(pid)?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let own = (own_exe.as_deref(), own_comm.as_deref());
            if is_runner(exe.as_deref(), &stat.comm, own) {
                return None;
            }
            let command = match procfs::read_cmdline(pid) {
                Some(command) => command,
                None if stat.is_zombie() => format!("[{}]", stat.comm),
                None => return None, // kernel thread
            };
            Some(ProcessInfo {
                pid,
                ppid: stat.ppid,
                command,
                started_at: boot_ms + stat.start_ticks * 1000 / ticks,
                rss_bytes: stat.rss_pages * page,
                state: stat.state.to_string(),
            })
        })
        .collect();
    Ok(ProcessList { processes })
}

/// Whether a process, given its executable (if readable) and its comm, is this runner binary.
/// Runner processes are not dumpable, so a process of the same uid may not read their `exe`
/// link; their comm, the binary's file name, tells them apart then.
fn is_runner(exe: Option<&Path>, comm: &str, own: (Option<&Path>, Option<&str>)) -> bool {
    let (own_exe, own_comm) = own;
    match (exe, own_exe) {
        (Some(exe), Some(own_exe)) => exe == own_exe,
        (Some(_), None) => false,
        (None, _) => own_comm == Some(comm),
    }
}

/// Sends `signal` to `pid`, or to its whole process group with `group` (an execution's
/// processes share the group of its main process).
pub fn signal(pid: i32, signal: i32, group: bool) -> Result<Signalled> {
    if pid <= 1 {
        return Err(Error::Usage(format!("refusing to signal pid {pid}")));
    }
    let target = if group { -pid } else { pid };
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(target, signal) } != 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::ESRCH) => Error::NotFound(format!("process {pid}")),
            _ => Error::Io {
                context: format!("signalling {pid}"),
                source,
            },
        });
    }
    Ok(Signalled { pid, signal, group })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_a_child_and_signals_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // Right after fork the child may not have exec'd `sleep` yet: look until it has.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (listed, found) = loop {
            let listed = list_processes().expect("ps");
            let found = listed
                .processes
                .iter()
                // Its memory is counted once `sleep` runs (under load, a moment after exec).
                .find(|p| p.pid == pid && p.command == "sleep 30" && p.rss_bytes > 0)
                .cloned();
            if let Some(found) = found {
                break (listed, found);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep is never listed"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(found.started_at > 1_600_000_000_000);
        assert!(listed
            .processes
            .iter()
            .all(|p| p.pid != 1 && p.pid != std::process::id() as i32));

        assert!(signal(pid, libc::SIGKILL, false).is_ok());
        let status = child.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(matches!(
            signal(pid, libc::SIGKILL, false),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn runner_processes_are_told_apart_even_when_their_exe_is_hidden() {
        let runner = Path::new("/kubexec/bin/kubexec-runner");
        let own = (Some(runner), Some("kubexec-runner"));
        assert!(is_runner(Some(runner), "kubexec-runner", own));
        assert!(!is_runner(Some(Path::new("/usr/bin/sleep")), "sleep", own));
        // Not dumpable: the exe link is unreadable, the comm still says what it is.
        assert!(is_runner(None, "kubexec-runner", own));
        assert!(!is_runner(None, "sleep", own));
        assert!(!is_runner(Some(runner), "kubexec-runner", (None, None)));
    }

    #[test]
    fn refuses_init_and_nonsense_pids() {
        for pid in [1, 0, -1, -42] {
            assert!(
                matches!(signal(pid, libc::SIGTERM, false), Err(Error::Usage(_))),
                "{pid}"
            );
        }
    }
}
