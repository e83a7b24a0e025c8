//! Everything that crosses the exec stream: framing, the exec spec and its events, and the
//! helper subcommands' requests and responses. The operator and api depend on these types.
//!
//! # `exec`
//! - stdin: one frame (`KUBEXEC/1 <len>\n` + `<len>` bytes of JSON [`ExecSpec`]), e.g. from
//!   [`ExecSpec::to_frame`]. The runner reads exactly that frame and never waits for EOF.
//! - stdout: frames of JSON [`RunnerEvent`]s only: any number of `stdout`/`stderr` chunks, then
//!   exactly one `result` or `error`. Parse with [`FrameDecoder`]. User output goes to files,
//!   never to this stream, and every runner process is non-dumpable, so user code can neither
//!   write to this stream nor read the spec on stdin. No frame is larger than
//!   [`MAX_FRAME_BYTES`]; the reading side drops larger ones unread.
//! - the result carries a MAC under the spec's `resultKey` (see [`ResultKey`]): the reader
//!   accepts a result only when it verifies and names the run it asked for, because a replayed
//!   result comes from a file user code may have rewritten.
//! - exit status: 0 with a `result` (whatever the user's exit code), non-zero with an `error`.
//! - The same run ID never runs twice: a repeated exec reports the stored outcome (or waits for
//!   the running one) with `recovered: true`.
//!
//! # `serve`
//! Many `exec` and `follow` requests over one exec stream: see [`ChannelRequest`] (the
//! envelope, flow control and limits are described in that module).
//!
//! # `write-files`
//! - stdin: per file a [`WriteFilesFrame::File`] frame followed by exactly `size` raw bytes,
//!   then a [`WriteFilesFrame::End`] frame. All files or none are renamed into place.
//! - stdout: [`FilesWritten`].
//!
//! # Other helpers
//! `stage NAME` → [`Staged`] (stdin kept as the code of a later spec's `stagedCode`), `ls` →
//! [`FileList`], `ps` → [`ProcessList`], `kill` → [`Signalled`], `install` → [`Installed`],
//! `result` → [`RunStatus`], `cat` → raw bytes. Each prints one JSON line on
//! stdout; a failure prints a [`RunnerError`] JSON line on stderr and exits non-zero.

mod channel;
mod exec;
mod frame;
mod helpers;
mod seal;

pub use channel::*;
pub use exec::*;
pub use frame::*;
pub use helpers::*;
pub use seal::*;
