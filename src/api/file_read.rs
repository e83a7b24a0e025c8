//! `GET /files/read` in constant memory. The file is read twice from the sandbox, as a stream
//! both times: a first pass counts its bytes and checks whether it is UTF-8 (so that the size
//! limit and the encoding are decided before the answer starts), and a second pass is encoded
//! chunk by chunk straight into the JSON response. Neither the file nor its encoding is ever
//! held whole.

use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;

use super::model::Encoding;

/// Checks a byte stream for UTF-8, chunk by chunk: a character split between chunks is carried
/// over to the next one.
#[derive(Debug, Default)]
pub struct Utf8Text {
    carry: Vec<u8>,
}

/// A byte stream that is not UTF-8.
#[derive(Debug, PartialEq, Eq)]
pub struct NotUtf8;

impl Utf8Text {
    /// The text of `chunk` (after what was carried over) up to a character cut at its end.
    pub fn push(&mut self, chunk: &[u8]) -> Result<String, NotUtf8> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        match std::str::from_utf8(&bytes) {
            Ok(_) => String::from_utf8(bytes).map_err(|_| NotUtf8),
            // A character cut at the end of the chunk: keep its first bytes for the next one.
            Err(e) if e.error_len().is_none() => {
                let valid = e.valid_up_to();
                self.carry = bytes.split_off(valid);
                String::from_utf8(bytes).map_err(|_| NotUtf8)
            }
            Err(_) => Err(NotUtf8),
        }
    }

    /// The end of the stream: nothing may be left over.
    pub fn finish(self) -> Result<(), NotUtf8> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(NotUtf8)
        }
    }
}

/// Encodes a file's bytes, chunk by chunk, as the inside of a JSON string.
#[derive(Debug)]
pub enum ContentEncoder {
    /// The text, JSON-escaped. A byte sequence that is not UTF-8 (the file changed between the
    /// passes) becomes U+FFFD.
    Utf8(Utf8Text),
    /// Base64; up to two bytes wait for the next chunk.
    Base64(Vec<u8>),
}

impl ContentEncoder {
    /// An encoder for `encoding`.
    pub fn new(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Utf8 => Self::Utf8(Utf8Text::default()),
            Encoding::Base64 => Self::Base64(Vec::new()),
        }
    }

    /// The encoded form of `chunk` (what can be encoded of it yet).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        match self {
            Self::Utf8(text) => {
                let decoded = text.push(chunk).unwrap_or_else(|NotUtf8| {
                    *text = Utf8Text::default();
                    String::from_utf8_lossy(chunk).into_owned()
                });
                json_string_inside(&decoded)
            }
            Self::Base64(carry) => {
                carry.extend_from_slice(chunk);
                let whole = carry.len() / 3 * 3;
                let rest = carry.split_off(whole);
                let encoded = STANDARD.encode(&carry[..]);
                *carry = rest;
                Bytes::from(encoded)
            }
        }
    }

    /// What is left at the end of the stream.
    pub fn finish(self) -> Bytes {
        match self {
            Self::Utf8(text) if text.carry.is_empty() => Bytes::new(),
            Self::Utf8(text) => json_string_inside(&String::from_utf8_lossy(&text.carry)),
            Self::Base64(carry) => Bytes::from(STANDARD.encode(carry)),
        }
    }
}

fn json_string_inside(text: &str) -> Bytes {
    let quoted = serde_json::Value::from(text).to_string();
    Bytes::from(quoted.as_bytes()[1..quoted.len() - 1].to_vec())
}

/// The JSON before the content: `{"path":"…","content":"`.
pub fn body_head(path: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"path\":{},\"content\":\"",
        serde_json::Value::from(path)
    ))
}

/// The JSON after the content: `","encoding":"…","size":N}`.
pub fn body_tail(encoding: Encoding, size: u64) -> Bytes {
    let encoding = match encoding {
        Encoding::Utf8 => "utf8",
        Encoding::Base64 => "base64",
    };
    Bytes::from(format!("\",\"encoding\":\"{encoding}\",\"size\":{size}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::FileContent;

    fn encode_in_chunks(bytes: &[u8], encoding: Encoding, chunk: usize) -> FileContent {
        let mut body = body_head("dir/a \"b\".txt").to_vec();
        let mut encoder = ContentEncoder::new(encoding);
        for piece in bytes.chunks(chunk) {
            body.extend_from_slice(&encoder.push(piece));
        }
        body.extend_from_slice(&encoder.finish());
        body.extend_from_slice(&body_tail(encoding, bytes.len() as u64));
        serde_json::from_slice(&body).expect("the body is JSON")
    }

    #[test]
    fn text_split_anywhere_is_checked_and_escaped_whole() {
        let text = "héllo \"wörld\"\n\t€ 😀 \u{1}".repeat(50);
        for chunk in [1, 2, 3, 5, 64] {
            let mut check = Utf8Text::default();
            for piece in text.as_bytes().chunks(chunk) {
                check.push(piece).expect("valid");
            }
            assert_eq!(check.finish(), Ok(()));
            let read = encode_in_chunks(text.as_bytes(), Encoding::Utf8, chunk);
            assert_eq!(read.content, text, "chunks of {chunk}");
            assert_eq!(read.path, "dir/a \"b\".txt");
            assert_eq!(read.size, text.len() as u64);
        }
        let mut check = Utf8Text::default();
        assert_eq!(check.push(&[0x66, 0xff]), Err(NotUtf8));
        let mut cut = Utf8Text::default();
        assert!(cut.push("é".as_bytes().get(..1).expect("a byte")).is_ok());
        assert_eq!(cut.finish(), Err(NotUtf8), "a character cut at the end");
    }

    #[test]
    fn bytes_split_anywhere_are_base64_whole() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        for chunk in [1, 2, 3, 4, 100, 999] {
            let read = encode_in_chunks(&bytes, Encoding::Base64, chunk);
            assert_eq!(
                STANDARD.decode(read.content).expect("base64"),
                bytes,
                "chunks of {chunk}"
            );
            assert_eq!(read.encoding, Encoding::Base64);
        }
    }
}
