//! `init`: PID 1 of the sandbox container. It reaps every orphan (background processes of
//! executions end up here when their exec runner exits), forwards signals to the sandbox's
//! processes, and otherwise just stays up.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result};
use crate::pids::ProcessLimit;
use crate::procfs;
use crate::signals::{self, BlockedSignals};
use crate::supervise::become_subreaper;

/// Between forwarding a terminating signal and exiting; the kubelet's own grace period (and
/// its SIGKILL) still bounds the container's shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reap,
    Forward(i32),
    ForwardAndExit(i32),
    Ignore,
}

pub fn action_for(signal: i32) -> Action {
    match signal {
        libc::SIGCHLD => Action::Reap,
        libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => Action::ForwardAndExit(signal),
        s if FORWARDED.contains(&s) => Action::Forward(s),
        _ => Action::Ignore,
    }
}

/// Runs until told to terminate; then forwards, waits up to `grace`, and returns (exit 0).
pub fn run(grace: Duration) -> Result<()> {
    become_subreaper();
    // Once per sandbox, in the container's log: whether executions will be limited.
    let _ = writeln!(
        std::io::stderr(),
        "kubexec-runner: {}",
        ProcessLimit::from_environment()
    );
    let mut handled = FORWARDED.to_vec();
    handled.push(libc::SIGCHLD);
    // Blocked and taken synchronously with sigtimedwait: no handlers, no busy loop. Blocked
    // signals are delivered even to PID 1, which otherwise ignores signals without a handler.
    let blocked = BlockedSignals::block(&handled).context(|| "blocking signals".into())?;
    loop {
        // The timeout is a safety net for a coalesced SIGCHLD; reaping is cheap.
        let Some(signal) = blocked.wait_for(Duration::from_secs(30)) else {
            reap_all();
            continue;
        };
        match action_for(signal) {
            Action::Reap => reap_all(),
            Action::Forward(signal) => forward(signal),
            Action::ForwardAndExit(signal) => {
                forward(signal);
                wait_for_others(&blocked, grace);
                return Ok(());
            }
            Action::Ignore => {}
        }
    }
}

fn reap_all() {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer to a local.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

/// As PID 1, kill(-1) reaches every other process of the container. Anywhere else it would
/// reach every process of the user on the machine, so outside PID 1 nothing is forwarded.
fn forward(signal: i32) {
    if is_pid1() {
        let _ = signals::send(-1, signal);
    }
}

fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Until the grace period ends or no other process is left, reaping as they exit.
fn wait_for_others(blocked: &BlockedSignals, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        reap_all();
        let others_alive = is_pid1()
            && procfs::list_pids()
                .map(|pids| pids.iter().any(|&p| p != 1))
                .unwrap_or(false);
        let now = Instant::now();
        if !others_alive || now >= deadline {
            break;
        }
        blocked.wait_for((deadline - now).min(Duration::from_millis(100)));
    }
    if is_pid1() {
        let _ = signals::send(-1, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_actions() {
        assert_eq!(action_for(libc::SIGCHLD), Action::Reap);
        assert_eq!(
            action_for(libc::SIGTERM),
            Action::ForwardAndExit(libc::SIGTERM)
        );
        assert_eq!(
            action_for(libc::SIGINT),
            Action::ForwardAndExit(libc::SIGINT)
        );
        assert_eq!(action_for(libc::SIGUSR1), Action::Forward(libc::SIGUSR1));
        assert_eq!(action_for(libc::SIGHUP), Action::Forward(libc::SIGHUP));
        assert_eq!(action_for(libc::SIGWINCH), Action::Ignore);
    }
}
