//! The few facts the runner reads from /proc about processes.

use std::path::Path;

/// Fields of `/proc/<pid>/stat` that the runner uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// Clock ticks after boot; with the pid it identifies a process across pid reuse.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the contents of a stat file. `comm` may contain spaces and parentheses, so the fixed
/// fields are taken after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    // Field 3 (state) is the first after the comm; fields are numbered from 1.
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        rss_pages: field(24)?.parse().ok()?,
    })
}

pub fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether the process that had `start_ticks` is still alive (not reused, not a zombie).
pub fn is_alive(pid: i32, start_ticks: u64) -> bool {
    read_stat(pid).is_some_and(|stat| stat.start_ticks == start_ticks && !stat.is_zombie())
}

/// The command line joined by spaces, or `None` if it is empty (kernel threads, zombies).
pub fn read_cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<_> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// Boot time in Unix seconds, from the `btime` line of /proc/stat.
pub fn boot_time_secs() -> Option<u64> {
    parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// All numeric entries of /proc.
pub fn list_pids() -> std::io::Result<Vec<i32>> {
    let mut pids: Vec<i32> = std::fs::read_dir(Path::new("/proc"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

pub fn own_start_ticks() -> Option<u64> {
    read_stat(std::process::id() as i32).map(|stat| stat.start_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_tricky_comm() {
        let line = "4242 (my (weird) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 12345678 321 18446744073709551615";
        let stat = parse_stat(line).expect("parses");
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "my (weird) prog");
        assert_eq!((stat.state, stat.ppid, stat.pgrp), ('S', 1, 4242));
        assert_eq!(stat.start_ticks, 987654);
        assert_eq!(stat.rss_pages, 321);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn reads_own_process() {
        let me = read_stat(std::process::id() as i32).expect("own stat");
        assert!(is_alive(me.pid, me.start_ticks));
        assert!(
            !is_alive(me.pid, me.start_ticks + 1),
            "a reused pid is not the same process"
        );
        assert!(read_cmdline(me.pid).is_some());
        assert!(boot_time_secs().is_some_and(|b| b > 1_000_000_000));
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }
}
