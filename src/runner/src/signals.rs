//! Thin safe wrappers over the signal syscalls the runner needs, and signal names.

use std::io;
use std::time::Duration;

use crate::error::{Error, Result};

/// A set of signals blocked for the calling thread; the previous mask comes back on drop.
///
/// Blocked signals stay pending until [`wait_for`] takes them, which replaces async signal
/// handlers (and their restrictions) with plain sequential code.
pub struct BlockedSignals {
    set: libc::sigset_t,
    previous: libc::sigset_t,
}

impl BlockedSignals {
    pub fn block(signals: &[i32]) -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it; the pointers are
        // valid for the duration of the calls.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Self { set, previous })
        }
    }

    /// Waits up to `timeout` for one of the blocked signals; returns it, or `None` on timeout.
    pub fn wait_for(&self, timeout: Duration) -> Option<i32> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        };
        // SAFETY: `set` is initialised; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &timeout) };
        (signal > 0).then_some(signal)
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

/// kill(2), treating "no such process" as success: the goal (it is not running) holds.
pub fn send(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(error)
    }
}

/// Whether any process of group `pgid` still exists (zombies included).
pub fn group_exists(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

const NAMES: [(&str, i32); 10] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("ALRM", libc::SIGALRM),
];

/// Accepts `TERM`, `SIGTERM`, `term` or a number 1..=64.
pub fn parse_signal(text: &str) -> Result<i32> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, number)) = NAMES.iter().find(|(known, _)| *known == name) {
        return Ok(number);
    }
    match name.parse::<i32>() {
        Ok(number) if (1..=64).contains(&number) => Ok(number),
        _ => Err(Error::Usage(format!("unknown signal {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_names_and_numbers() {
        assert_eq!(parse_signal("TERM").ok(), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigkill").ok(), Some(libc::SIGKILL));
        assert_eq!(parse_signal("2").ok(), Some(libc::SIGINT));
        for bad in ["", "0", "65", "BOGUS", "-9"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blocked_signal_is_taken_by_wait() {
        let blocked = BlockedSignals::block(&[libc::SIGUSR2]).expect("block");
        // SAFETY: raises a signal that is blocked in this thread, so it is only queued for it.
        unsafe { libc::raise(libc::SIGUSR2) };
        assert_eq!(
            blocked.wait_for(Duration::from_secs(1)),
            Some(libc::SIGUSR2)
        );
        assert_eq!(blocked.wait_for(Duration::from_millis(1)), None);
    }
}
