//! Standard base64 decoding for `encoding: base64` file contents (one small function does not
//! justify a dependency).

use crate::error::{Error, Result};

/// Decodes standard-alphabet base64. Padding is optional and ASCII whitespace (line wrapping)
/// is ignored.
pub fn decode(text: &str) -> Result<Vec<u8>> {
    let invalid = |why: &str| Error::InvalidSpec(format!("invalid base64 content: {why}"));
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits, mut padding) = (0u32, 0u32, 0usize);
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        if byte == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(invalid("data after padding"));
        }
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(invalid(&format!("unexpected character {:?}", byte as char))),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // 6 leftover bits can never be a whole byte: the input was cut short.
    if bits >= 6 || padding > 2 {
        return Err(invalid("wrong length"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_with_and_without_padding() {
        assert_eq!(decode("").ok(), Some(vec![]));
        assert_eq!(decode("aGk=").ok(), Some(b"hi".to_vec()));
        assert_eq!(decode("aGk").ok(), Some(b"hi".to_vec()));
        assert_eq!(
            decode("aGVsbG8gd29y\nbGQ=").ok(),
            Some(b"hello world".to_vec())
        );
        assert_eq!(decode("/+8=").ok(), Some(vec![0xff, 0xef]));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["a", "aG!k", "aGk=x", "aG===="] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
