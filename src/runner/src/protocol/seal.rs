//! The result MAC: what makes a stored or replayed [`ExecResult`] trustworthy.
//!
//! User code runs as the runner's uid and can rewrite anything in the workspace, including the
//! run directory that `result.json` lives in, and a later exec (after an operator restart)
//! replays that file. So a result is accepted only when it carries an HMAC-SHA256 under a
//! per-run [`ResultKey`]. The key arrives in the spec frame on the runner's stdin; the runner
//! holds it only in memory (its process is non-dumpable, so user code cannot read that memory
//! or the stdin pipe through `/proc`) and never writes it to a file or puts it in an
//! environment. Where the key lives outside the sandbox is the operator's business (it records
//! it in the Execution's status, which the sandbox cannot read: no service-account token, no
//! route to the apiserver).
//!
//! The MAC covers a fixed list of the result's fields ([`MacInput`]), not "whatever the struct
//! serializes to": a field added later is then not silently part of it, and a runner and an
//! operator of different builds agree on it as long as they speak the same
//! [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION). `recovered` and `mac` itself are not covered
//! (`recovered` is set on replay, after sealing).

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use super::ExecResult;

type HmacSha256 = Hmac<Sha256>;

/// Length of a [`ResultKey`] in bytes.
pub const RESULT_KEY_BYTES: usize = 32;
/// Domain separation: a MAC over a result can never be mistaken for a MAC over anything else.
const MAC_CONTEXT: &[u8] = b"kubexec result mac v1\n";
/// Domain separation of [`ResultKey::derive`].
const DERIVE_CONTEXT: &[u8] = b"kubexec run key v1\n";
/// Shortest cluster result secret [`ResultKey::derive`] accepts.
pub const MIN_RESULT_SECRET_BYTES: usize = 32;

/// A run's result key. Serialized as lowercase hex (in the spec frame only); its `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ResultKey([u8; RESULT_KEY_BYTES]);

impl fmt::Debug for ResultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResultKey(<redacted>)")
    }
}

/// The fields the MAC covers, in a fixed order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MacInput<'a> {
    version: u32,
    run_id: &'a str,
    exit_code: i32,
    stdout: &'a str,
    stderr: &'a str,
    stdout_bytes: u64,
    stderr_bytes: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    execution_time_ms: u64,
    memory_used_bytes: u64,
    cpu_time_ms: u64,
    timed_out: bool,
    oom_killed: bool,
    files_written: &'a [String],
    files_written_truncated: bool,
    started_at: u64,
    finished_at: u64,
}

impl<'a> From<&'a ExecResult> for MacInput<'a> {
    fn from(r: &'a ExecResult) -> Self {
        Self {
            version: r.version,
            run_id: &r.run_id,
            exit_code: r.exit_code,
            stdout: &r.stdout,
            stderr: &r.stderr,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            execution_time_ms: r.execution_time_ms,
            memory_used_bytes: r.memory_used_bytes,
            cpu_time_ms: r.cpu_time_ms,
            timed_out: r.timed_out,
            oom_killed: r.oom_killed,
            files_written: &r.files_written,
            files_written_truncated: r.files_written_truncated,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

impl ResultKey {
    pub fn from_bytes(bytes: [u8; RESULT_KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// The key of one run, derived from a secret that the operator and the api share and the
    /// sandbox never sees: HMAC-SHA256(secret, context, namespace, Execution name, run id).
    /// Whoever holds the secret can verify a stored result after the Execution (and the key it
    /// recorded) is gone; user code, without the secret, still cannot forge one. The name is
    /// part of it so that a name that user code points at another run of the session (the
    /// run directory's name index is writable) does not verify. `None` when the secret is
    /// shorter than [`MIN_RESULT_SECRET_BYTES`].
    pub fn derive(secret: &[u8], namespace: &str, name: &str, run_id: &str) -> Option<Self> {
        if secret.len() < MIN_RESULT_SECRET_BYTES {
            return None;
        }
        let mut mac = HmacSha256::new_from_slice(secret).ok()?;
        mac.update(DERIVE_CONTEXT);
        // Each part is length-prefixed: no two (namespace, name, run) triples share an input.
        for part in [namespace, name, run_id] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0; RESULT_KEY_BYTES];
        bytes.copy_from_slice(&digest);
        Some(Self(bytes))
    }

    /// Lowercase hex, as the key travels in the spec and is recorded by the operator.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses [`to_hex`](Self::to_hex)'s form; `None` unless exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = from_hex(text)?;
        bytes.try_into().ok().map(Self)
    }

    /// `None` never happens in practice: HMAC takes keys of any length, and the covered fields
    /// are strings, numbers and bools, which always serialize.
    fn mac_of(&self, result: &ExecResult) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.0).ok()?;
        mac.update(MAC_CONTEXT);
        mac.update(&serde_json::to_vec(&MacInput::from(result)).ok()?);
        Some(mac)
    }

    /// Sets `result.mac` to the MAC of its covered fields under this key.
    pub fn seal(&self, result: &mut ExecResult) {
        result.mac = self
            .mac_of(result)
            .map(|mac| to_hex(&mac.finalize().into_bytes()));
    }

    /// True only when `result.mac` is the MAC of its covered fields under this key (compared
    /// in constant time).
    pub fn verify(&self, result: &ExecResult) -> bool {
        let Some(tag) = result.mac.as_deref().and_then(from_hex) else {
            return false;
        };
        self.mac_of(result)
            .is_some_and(|mac| mac.verify_slice(&tag).is_ok())
    }
}

impl Serialize for ResultKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ResultKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "resultKey must be {} hex digits",
                RESULT_KEY_BYTES * 2
            ))
        })
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ResultKey {
        ResultKey::from_bytes([byte; RESULT_KEY_BYTES])
    }

    fn result() -> ExecResult {
        ExecResult {
            version: 1,
            run_id: "run-1".into(),
            exit_code: 7,
            stdout: "real\n".into(),
            files_written: vec!["a.txt".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_sealed_result_verifies_under_its_key_only() {
        let mut sealed = result();
        key(1).seal(&mut sealed);
        assert!(key(1).verify(&sealed));
        assert!(!key(2).verify(&sealed));
        assert!(!key(1).verify(&result()), "no MAC, no trust");

        // Replay marks the result recovered; that is outside the MAC.
        sealed.recovered = true;
        assert!(key(1).verify(&sealed));
    }

    #[test]
    fn any_change_to_a_covered_field_breaks_the_mac() {
        let mut sealed = result();
        key(1).seal(&mut sealed);
        type Forgery = fn(&mut ExecResult);
        let forgeries: Vec<(&str, Forgery)> = vec![
            ("exit code", |r| r.exit_code = 0),
            ("stdout", |r| r.stdout = "FORGED".into()),
            ("run id", |r| r.run_id = "run-2".into()),
            ("files", |r| r.files_written.push("b".into())),
            ("timed out", |r| r.timed_out = true),
            ("mac", |r| r.mac = Some("00".repeat(32))),
            ("bad hex", |r| r.mac = Some("zz".into())),
        ];
        for (what, forge) in forgeries {
            let mut forged = sealed.clone();
            forge(&mut forged);
            assert!(!key(1).verify(&forged), "{what}");
        }
    }

    #[test]
    fn derived_keys_differ_per_run_and_need_a_long_secret() {
        let secret = [5u8; MIN_RESULT_SECRET_BYTES];
        let derive = |ns: &str, name: &str, run: &str| ResultKey::derive(&secret, ns, name, run);
        let one = derive("t", "exe-a", "uid-1").expect("derived");
        assert_eq!(
            derive("t", "exe-a", "uid-1"),
            Some(one.clone()),
            "deterministic"
        );
        for other in [
            derive("t", "exe-a", "uid-2"),
            derive("t", "exe-b", "uid-1"),
            derive("u", "exe-a", "uid-1"),
            derive("t", "exe-au", "id-1"),
            ResultKey::derive(&[6u8; 32], "t", "exe-a", "uid-1"),
        ] {
            assert_ne!(other, Some(one.clone()));
        }
        assert!(ResultKey::derive(&[5u8; 31], "t", "exe-a", "uid-1").is_none());

        // Without the secret, a result sealed under a guessed key never verifies.
        let mut forged = result();
        key(9).seal(&mut forged);
        assert!(!one.verify(&forged));
        let mut sealed = result();
        one.seal(&mut sealed);
        assert!(one.verify(&sealed));
    }

    #[test]
    fn keys_travel_as_hex_and_never_show_in_debug() {
        let k = key(0xab);
        let json = serde_json::to_string(&k).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(
            serde_json::from_str::<ResultKey>(&json).ok(),
            Some(k.clone())
        );
        assert!(serde_json::from_str::<ResultKey>("\"abc\"").is_err());
        assert!(ResultKey::from_hex(&"g0".repeat(32)).is_none());
        assert!(!format!("{k:?}").contains("ab"));
    }
}
