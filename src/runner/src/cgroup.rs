//! The container's OOM-kill counter, to tell an OOM kill from any other SIGKILL.

/// cgroup v1 (memory controller) and v2 (unified); whichever exists in this container.
const OOM_COUNTER_FILES: [&str; 2] = [
    "/sys/fs/cgroup/memory/memory.oom_control",
    "/sys/fs/cgroup/memory.events",
];

/// Total OOM kills in the container's memory cgroup, or `None` where neither file is readable
/// (then OOM kills cannot be detected and are reported as plain SIGKILLs).
pub fn oom_kill_count() -> Option<u64> {
    OOM_COUNTER_FILES
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|text| parse_oom_kill(&text))
}

/// Both files use `key value` lines and name the counter `oom_kill`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// The process died of SIGKILL and the container's counter moved while it ran. The counter is
/// container-wide, so a concurrent execution's OOM kill could be misattributed; it cannot be
/// narrowed further without a cgroup per execution.
pub fn was_oom_killed(killed_by_sigkill: bool, before: Option<u64>, after: Option<u64>) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => killed_by_sigkill && after > before,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_files() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn oom_needs_sigkill_and_a_counter_increase() {
        assert!(was_oom_killed(true, Some(1), Some(2)));
        assert!(!was_oom_killed(false, Some(1), Some(2)));
        assert!(!was_oom_killed(true, Some(2), Some(2)));
        assert!(!was_oom_killed(true, None, Some(2)));
    }
}
