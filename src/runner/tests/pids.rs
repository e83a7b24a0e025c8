//! The session's process limit through the binary. Inside a user namespace of its own, as a
//! sandbox Pod with `hostUsers: false` has, the limit binds the user's code and not the runner.
//! Without one, the limit is not applied.
//!
//! The user-namespace test needs no privilege where unprivileged user namespaces are allowed.
//! Run as root, it first drops to uid 65534, because the kernel never applies `RLIMIT_NPROC` to
//! host root. Where no user namespace can be made, it says so and passes.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{finish_exec, runner, TempDir};
use kubexec_runner::pids::PIDS_LIMIT_ENV;
use kubexec_runner::protocol::{ExecResult, ExecSpec, FrameDecoder, ProcessList, RunnerEvent};

const LIMIT: u64 = 24;
/// Host uid the test drops to when it runs as root.
const NOBODY: u32 = 65534;

/// Prints `<label> <fields of the "Max processes" line>` of a limits file using shell builtins
/// only, so that it works when no process can be forked.
const PRINT_LIMIT: &str = r#"limit() { while read -r l; do case $l in "Max processes"*) echo "$1 $l";; esac; done < "$2"; }"#;

fn result_of(frames: &[u8]) -> ExecResult {
    let mut decoder = FrameDecoder::new();
    decoder.push(frames);
    let mut last = None;
    while let Some(event) = decoder.next_event() {
        last = Some(event.expect("a valid event"));
    }
    match last {
        Some(RunnerEvent::Result(result)) => result,
        other => panic!("expected a result event last, got {other:?}"),
    }
}

/// Soft and hard limit from a `<label> Max processes <soft> <hard> processes` line.
fn limits_line(stdout: &str, label: &str) -> (String, String) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{label} Max processes")))
        .unwrap_or_else(|| panic!("no {label} limit in {stdout:?}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

fn write_frame(path: &Path, spec: &ExecSpec) {
    std::fs::write(path, spec.to_frame()).expect("write spec frame");
}

/// `sh -c script` in a new user namespace where uid 1000 maps onto an unprivileged host uid,
/// or `None` if this machine allows no such namespace.
fn spawn_in_user_namespace(script: &str, args: &[&Path]) -> Option<std::process::Output> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let drop_root = euid == 0;
    let outer_uid = if drop_root { NOBODY } else { euid };
    let uid_map = format!("1000 {outer_uid} 1\n").into_bytes();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .env(PIDS_LIMIT_ENV, LIMIT.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe syscalls on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if drop_root {
                let gid = if egid == 0 { NOBODY } else { egid };
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return fail();
                }
            }
            // Changing uid made this process non-dumpable, and its /proc files root's.
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return fail();
            }
            let fd = libc::open(c"/proc/self/uid_map".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return fail();
            }
            let written = libc::write(fd, uid_map.as_ptr().cast(), uid_map.len());
            libc::close(fd);
            if written != uid_map.len() as isize {
                return fail();
            }
            Ok(())
        });
    }
    match command.output() {
        Ok(output) => Some(output),
        Err(error) => {
            eprintln!("skipped: no user namespace can be made here ({error})");
            None
        }
    }
}

#[test]
fn in_a_user_namespace_the_limit_binds_user_code_and_not_the_runner() {
    let dir = TempDir::new("pids-userns");
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).expect("workspace");
    for path in [dir.path(), ws.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
            .expect("open the temp dir to the unprivileged uid");
    }

    // The first execution fills the session's limit with background sleeps, from a subshell
    // whose failed fork ends it, then stays alive without forking.
    let mut fill = ExecSpec::new("fill-1");
    fill.workspace = ws.display().to_string();
    fill.timeout_seconds = 20;
    // A tenant's env never raises the limit: the runner reads its own environment only.
    fill.env.insert(PIDS_LIMIT_ENV.into(), "100000".into());
    fill.command = Some(format!(
        r#"echo $$ > pgid; {PRINT_LIMIT}
limit self /proc/self/limits; limit runner /proc/$PPID/limits
read -r oom < /proc/self/oom_score_adj; echo "oom_score_adj $oom"
( i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); echo $i > started; done )
echo > filled; exec sleep 60"#
    ));
    // The second runs while the session is full: the runner itself may still fork it.
    let mut next = ExecSpec::new("next-1");
    next.workspace = ws.display().to_string();
    next.command = Some("echo next ran".into());
    let (fill_frame, next_frame) = (dir.path().join("fill"), dir.path().join("next"));
    write_frame(&fill_frame, &fill);
    write_frame(&next_frame, &next);
    let (fill_out, next_out) = (dir.path().join("fill.out"), dir.path().join("next.out"));
    let ps_out = dir.path().join("ps.out");

    // As a sandbox does: every runner process (here the wrapper too) keeps its own high limit.
    let script = r#"R=$1; W=$2
"$R" exec < "$3" > "$4" &
i=0; while [ ! -e "$W/filled" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
"$R" exec < "$5" > "$6"
"$R" ps > "$7"
kill -s KILL -- -"$(cat "$W/pgid")"
wait"#;
    let runner_path = Path::new(env!("CARGO_BIN_EXE_kubexec-runner"));
    let args = [
        runner_path,
        ws.as_path(),
        &fill_frame,
        &fill_out,
        &next_frame,
        &next_out,
        &ps_out,
    ];
    let Some(output) = spawn_in_user_namespace(script, &args) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "wrapper failed: {stderr}");

    let filled = result_of(&std::fs::read(&fill_out).expect("fill output"));
    let limit = LIMIT.to_string();
    assert_eq!(
        limits_line(&filled.stdout, "self"),
        (limit.clone(), limit.clone()),
        "user code gets soft = hard = {LIMIT}, whatever its env says"
    );
    let (runner_soft, _) = limits_line(&filled.stdout, "runner");
    assert_ne!(runner_soft, limit, "the runner keeps its own limit");
    assert!(
        filled.stdout.contains("oom_score_adj 1000\n"),
        "the non-dumpable runner still hands its child a writable oom_score_adj: {}",
        filled.stdout
    );
    let started: u64 = std::fs::read_to_string(ws.join("started"))
        .expect("some sleeps started")
        .trim()
        .parse()
        .expect("a count");
    assert!(
        (LIMIT / 2..LIMIT).contains(&started),
        "{started} background sleeps started under a limit of {LIMIT}; {}",
        filled.stderr
    );

    let next = result_of(&std::fs::read(&next_out).expect("next output"));
    assert_eq!(
        (next.exit_code, next.stdout.as_str()),
        (0, "next ran\n"),
        "the next execution starts while the session is at its limit: {}",
        next.stderr
    );

    // Runner processes cannot be inspected by their uid, yet `ps` still leaves them out.
    let listed: ProcessList =
        serde_json::from_slice(&std::fs::read(&ps_out).expect("ps output")).expect("ps json");
    let commands: Vec<&str> = listed
        .processes
        .iter()
        .map(|p| p.command.as_str())
        .collect();
    assert!(commands.contains(&"sleep 60"), "the sleeps are listed");
    let runners: Vec<&&str> = commands
        .iter()
        .filter(|c| c.starts_with(&runner_path.display().to_string()))
        .collect();
    assert!(runners.is_empty(), "runner processes listed: {runners:?}");
}

#[test]
fn without_a_user_namespace_the_limit_is_not_applied() {
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").expect("uid_map");
    let host_uids = kubexec_runner::pids::is_identity_map(&uid_map) == Some(true);
    let ws = TempDir::new("pids-host");
    let mut spec = ws.spec("host-1");
    spec.command = Some(format!("{PRINT_LIMIT}\nlimit self /proc/self/limits"));
    let started = Instant::now();
    let mut child = runner()
        .arg("exec")
        .env(PIDS_LIMIT_ENV, LIMIT.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn runner");
    let stdin = child.stdin.as_mut().expect("stdin");
    stdin.write_all(&spec.to_frame()).expect("send spec");
    stdin.flush().expect("flush");
    let run = finish_exec(child, started);

    let (soft, _) = limits_line(&run.result().stdout, "self");
    if host_uids {
        // The uid is shared with every sandbox on the node: limiting it would limit them all.
        assert_ne!(soft, LIMIT.to_string());
    } else {
        assert_eq!(soft, LIMIT.to_string());
    }
}
