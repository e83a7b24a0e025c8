//! What of a run's result an Execution's status keeps, defined once: the operator writes the
//! status with it, and the api answers a result it read straight from the runner (or from the
//! run directory) with it, so every answer of one execution is the same whichever path it took.

use kubexec_runner::protocol::ExecResult;

/// Cap per output stream in the status. Two streams stay well under the ~128 KiB the status
/// may take, with room for the other fields.
pub const STATUS_OUTPUT_CAP_BYTES: usize = 56 * 1024;
/// Most entries of `filesWritten` in the status, and their most bytes (JSON-encoded): with
/// the output caps, every list and text in the status is bounded, so no final status is ever
/// too large to write.
pub const STATUS_FILES_WRITTEN_CAP: usize = 256;
/// See [`STATUS_FILES_WRITTEN_CAP`].
pub const STATUS_FILES_WRITTEN_CAP_BYTES: usize = 8 * 1024;
/// Cap of `message` (and the condition's message): runner messages may quote user input.
pub const STATUS_MESSAGE_CAP_BYTES: usize = 2 * 1024;

/// A runner result cut to what the status keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FittedResult {
    /// Standard output, its head and tail when it did not fit.
    pub stdout: String,
    /// True when the runner or the fit cut stdout.
    pub stdout_truncated: bool,
    /// Standard error, like stdout.
    pub stderr: String,
    /// True when the runner or the fit cut stderr.
    pub stderr_truncated: bool,
    /// The first paths written.
    pub files_written: Vec<String>,
    /// True when the runner or the fit left paths out.
    pub files_written_truncated: bool,
}

impl FittedResult {
    /// `result`'s output and written files within the status caps.
    pub fn of(result: &ExecResult) -> Self {
        let (stdout, stdout_cut) = fit_output(&result.stdout, STATUS_OUTPUT_CAP_BYTES);
        let (stderr, stderr_cut) = fit_output(&result.stderr, STATUS_OUTPUT_CAP_BYTES);
        let (files_written, files_cut) = fit_files_written(&result.files_written);
        Self {
            stdout,
            stdout_truncated: result.stdout_truncated || stdout_cut,
            stderr,
            stderr_truncated: result.stderr_truncated || stderr_cut,
            files_written,
            files_written_truncated: result.files_written_truncated || files_cut,
        }
    }
}

/// `text` if its JSON encoding fits in `budget` bytes; otherwise its head and tail (on character
/// boundaries) around a marker, such that the encoding fits. The runner already caps output,
/// but lossy UTF-8 and JSON escapes can make the text larger than the bytes it came from.
pub fn fit_output(text: &str, budget: usize) -> (String, bool) {
    let encoded = |s: &str| {
        serde_json::to_string(s)
            .map(|j| j.len())
            .unwrap_or(usize::MAX)
    };
    if encoded(text) <= budget {
        return (text.to_string(), false);
    }
    let mut keep = budget.min(text.len());
    loop {
        let head_end = floor_char_boundary(text, keep / 2);
        let tail_start = ceil_char_boundary(text, text.len() - (keep - keep / 2));
        let omitted = tail_start.saturating_sub(head_end);
        let candidate = format!(
            "{}\n[... {omitted} bytes truncated ...]\n{}",
            &text[..head_end],
            &text[tail_start.max(head_end)..]
        );
        let size = encoded(&candidate);
        if size <= budget || keep == 0 {
            return (candidate, true);
        }
        keep = keep.saturating_sub((size - budget).max(64));
    }
}

/// The first paths of `files` that fit [`STATUS_FILES_WRITTEN_CAP`] entries and
/// [`STATUS_FILES_WRITTEN_CAP_BYTES`] bytes (a path too long for the budget on its own is
/// skipped), and whether any were left out.
pub fn fit_files_written(files: &[String]) -> (Vec<String>, bool) {
    let mut kept = Vec::new();
    let mut bytes = 0;
    for path in files {
        if kept.len() == STATUS_FILES_WRITTEN_CAP {
            return (kept, true);
        }
        let size = serde_json::to_string(path).map_or(usize::MAX, |json| json.len() + 1);
        if bytes + size > STATUS_FILES_WRITTEN_CAP_BYTES {
            return (kept, true);
        }
        bytes += size;
        kept.push(path.clone());
    }
    (kept, false)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_untouched() {
        assert_eq!(fit_output("hello", 100), ("hello".to_string(), false));
        let (cut, truncated) = fit_output(&"ab".repeat(1000), 200);
        assert!(truncated && cut.starts_with("abab") && cut.ends_with("abab"));
        assert!(serde_json::to_string(&cut).map(|j| j.len()).unwrap_or(0) <= 200);
    }

    #[test]
    fn few_files_written_are_kept_whole() {
        let (few, cut) = fit_files_written(&["a".into(), "b".into()]);
        assert_eq!((few.len(), cut), (2, false));
    }
}
