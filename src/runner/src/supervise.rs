//! Starts the user's process in its own session and watches it: reaps it with its resource
//! usage, enforces the timeout on the whole process group, and reaps orphans of the group.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::PipeWriter;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::invocation::Invocation;
use crate::signals::{self, BlockedSignals};

/// How often output files are followed and the deadline checked; a child's exit wakes the loop
/// at once (SIGCHLD), so this only bounds streaming latency.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Between SIGTERM and SIGKILL on timeout.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

pub struct Launch<'a> {
    pub invocation: &'a Invocation,
    pub env: &'a BTreeMap<String, String>,
    pub working_dir: &'a Path,
    /// `None` means `/dev/null`.
    pub stdin: Option<&'a Path>,
    /// Write ends of the output pipes (see [`crate::output_pipe`]); the runner keeps no copy.
    pub stdout: PipeWriter,
    pub stderr: PipeWriter,
    /// `RLIMIT_NPROC` (soft = hard) of the user process; `None` leaves the runner's own. See
    /// [`crate::pids`] for when it is set.
    pub process_limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_time: Duration,
    pub max_rss_bytes: u64,
}

impl Usage {
    fn add(&mut self, rusage: &libc::rusage) {
        let time = |tv: libc::timeval| {
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        };
        self.cpu_time += time(rusage.ru_utime) + time(rusage.ru_stime);
        // Linux reports ru_maxrss in KiB.
        self.max_rss_bytes = self
            .max_rss_bytes
            .max(rusage.ru_maxrss.max(0) as u64 * 1024);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, or 128 + signal number.
    pub exit_code: i32,
    pub killed_by: Option<i32>,
    pub timed_out: bool,
    pub wall_time: Duration,
    pub usage: Usage,
}

/// A running user process; its pid is also its process group and session id.
pub struct Supervised {
    pid: i32,
    started: Instant,
    sigchld: BlockedSignals,
}

impl Supervised {
    pub fn spawn(launch: Launch) -> Result<Self> {
        // Blocked before the fork so no SIGCHLD is lost; the child starts with an empty mask
        // (std resets it between fork and exec).
        let sigchld =
            BlockedSignals::block(&[libc::SIGCHLD]).context(|| "blocking SIGCHLD".into())?;
        let stdin = match launch.stdin {
            Some(path) => {
                Stdio::from(File::open(path).context(|| format!("opening {}", path.display()))?)
            }
            None => Stdio::null(),
        };
        let mut command = Command::new(&launch.invocation.program);
        command
            .args(&launch.invocation.args)
            .envs(launch.env)
            .current_dir(launch.working_dir)
            .stdin(stdin)
            // Pipes the runner drains: it alone decides where the output ends (see
            // `output_pipe`), whatever background processes keep writing.
            .stdout(launch.stdout)
            .stderr(launch.stderr);
        let process_limit = launch.process_limit;
        // SAFETY: setsid, setrlimit, prctl, open, write and close are async-signal-safe and
        // allocate nothing.
        unsafe {
            command.pre_exec(move || {
                // Own session and group: the timeout signals the whole group, and terminal
                // signals of the exec stream never reach it.
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // Only here, after the fork: the runner keeps its own limit, so it can still
                // start executions and kill this group when the session is at its limit. If
                // this fails the user code does not run at all.
                if let Some(limit) = process_limit {
                    let limit = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NPROC, &limit) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The runner is not dumpable (see `protect_from_user_code`) and this child still
                // is the runner until exec, which makes a user program dumpable again anyway.
                // Restored now, with the limit already in place, so that the child may open its
                // own oom_score_adj: a non-dumpable process's /proc files belong to root.
                libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
                // Under memory pressure the kernel should kill user code, never init or the
                // runner that reports the OOM. Raising one's own score needs no privilege.
                // Raw syscalls only: nothing may allocate between fork and exec.
                let fd = libc::open(
                    c"/proc/self/oom_score_adj".as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                );
                if fd >= 0 {
                    libc::write(fd, b"1000".as_ptr().cast(), 4);
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = command.spawn().map_err(|source| Error::SpawnFailed {
            program: launch.invocation.program.clone(),
            source,
        })?;
        // The std handle is dropped without waiting: wait4 below reaps it, with rusage.
        let pid = child.id() as i32;
        Ok(Self {
            pid,
            started,
            sigchld,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Runs until the process exits, calling `on_tick` about every [`POLL_INTERVAL`], or at
    /// once again while it returns true (it has more to do). Background processes the main
    /// process leaves behind are not waited for.
    pub fn wait(self, timeout: Duration, mut on_tick: impl FnMut() -> bool) -> Result<Outcome> {
        let deadline = self.started + timeout;
        let mut usage = Usage::default();
        let mut term_sent_at: Option<Instant> = None;
        let mut kill_sent = false;
        let status = loop {
            let busy = on_tick();
            self.reap_group_orphans(&mut usage);
            if let Some(status) = self.try_reap_main(&mut usage)? {
                break status;
            }
            let now = Instant::now();
            match term_sent_at {
                None if now >= deadline => {
                    let _ = signals::send(-self.pid, libc::SIGTERM);
                    term_sent_at = Some(now);
                }
                Some(sent) if !kill_sent && now >= sent + KILL_GRACE => {
                    let _ = signals::send(-self.pid, libc::SIGKILL);
                    kill_sent = true;
                }
                _ => {}
            }
            if !busy {
                self.sigchld.wait_for(POLL_INTERVAL);
            }
        };
        let wall_time = self.started.elapsed();
        let timed_out = term_sent_at.is_some();
        if timed_out {
            // The rest of a timed-out group goes too, without a second grace period.
            self.kill_group_until_gone(&mut usage);
        }
        let killed_by = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
        let exit_code = match killed_by {
            Some(signal) => 128 + signal,
            None => libc::WEXITSTATUS(status),
        };
        Ok(Outcome {
            exit_code,
            killed_by,
            timed_out,
            wall_time,
            usage,
        })
    }

    /// SIGKILLs the group until nothing of it is left, reaping what is orphaned to this runner
    /// meanwhile, for at most [`KILL_GRACE`]. A fork bomb's processes count against the
    /// session's process limit until they are reaped, zombies included; reporting only once they
    /// are gone means the session's next execution finds its limit free again.
    fn kill_group_until_gone(&self, usage: &mut Usage) {
        let deadline = Instant::now() + KILL_GRACE;
        while signals::group_exists(self.pid) && Instant::now() < deadline {
            let _ = signals::send(-self.pid, libc::SIGKILL);
            self.reap_group_orphans(usage);
            self.sigchld.wait_for(Duration::from_millis(5));
        }
    }

    fn try_reap_main(&self, usage: &mut Usage) -> Result<Option<i32>> {
        let mut status = 0;
        // SAFETY: rusage is plain data filled in by the kernel.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals.
        let reaped = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut rusage) };
        match reaped {
            0 => Ok(None),
            pid if pid == self.pid => {
                usage.add(&rusage);
                Ok(Some(status))
            }
            _ => {
                let source = std::io::Error::last_os_error();
                if source.kind() == std::io::ErrorKind::Interrupted {
                    return Ok(None);
                }
                Err(Error::Io {
                    context: format!("waiting for process {}", self.pid),
                    source,
                })
            }
        }
    }

    /// Background processes of the group whose parent exited are reparented to this runner
    /// (it is a child subreaper); reaping them counts their usage and avoids zombies. Only
    /// this group is touched: the main process is left for `try_reap_main`.
    fn reap_group_orphans(&self, usage: &mut Usage) {
        loop {
            // SAFETY: siginfo_t is plain data; waitid fills it in.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            // SAFETY: valid pointer to a local.
            if unsafe { libc::waitid(libc::P_PGID, self.pid as libc::id_t, &mut info, flags) } != 0
            {
                return;
            }
            // SAFETY: waitid succeeded, so si_pid is initialised (0 when nothing has exited).
            let pid = unsafe { info.si_pid() };
            if pid == 0 || pid == self.pid {
                return;
            }
            let mut status = 0;
            // SAFETY: as in try_reap_main.
            let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
            if unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut rusage) } == pid {
                usage.add(&rusage);
            } else {
                return;
            }
        }
    }
}

/// Makes this process the reaper of its orphaned descendants while it lives.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Makes this runner process non-dumpable, so that user code running as the same uid cannot
/// ptrace it, read or write its memory, or open its file descriptors through /proc. Otherwise
/// user code could borrow the runner's higher process limit (see [`crate::pids`]) by making it
/// fork, or write forged events into the exec stream. Where Yama's `ptrace_scope` already
/// forbids this, nothing changes; elsewhere this is the only guard. (One consequence: another
/// process of the uid cannot read a runner's `/proc/<pid>/exe`, which `ps` allows for.)
pub fn protect_from_user_code() {
    // SAFETY: prctl with PR_SET_DUMPABLE takes an integer flag only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}
