//! The preview port range: which sandbox ports a browser preview may open. The api proxies to
//! them and the operator's NetworkPolicies let the api reach them, so both parse the same
//! setting (`8080` or `8080-8090`) here.

use std::fmt;

use crate::layout::PREVIEW_PORT;

/// An inclusive range of TCP ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (`first` for a single port).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub const fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// True if `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Parses `8080` or `8080-8090`; the range must hold the default preview port. The error
    /// says why, for the caller to name its flag.
    pub fn parse_preview(text: &str) -> Result<Self, String> {
        let port = |part: &str| {
            part.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| "ports are numbers from 1 to 65535".to_string())
        };
        let range = match text.split_once('-') {
            Some((first, last)) => Self {
                first: port(first)?,
                last: port(last)?,
            },
            None => Self::single(port(text)?),
        };
        if range.first > range.last {
            return Err("the first port is above the last".into());
        }
        if !range.contains(PREVIEW_PORT) {
            return Err(format!(
                "must hold the preview port {PREVIEW_PORT}, which previewUrl opens"
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_port_or_a_range_holding_the_preview_port() {
        assert_eq!(
            PortRange::parse_preview("8080"),
            Ok(PortRange::single(8080))
        );
        assert_eq!(
            PortRange::parse_preview(" 8000 - 8100 "),
            Ok(PortRange {
                first: 8000,
                last: 8100
            })
        );
        for bad in ["", "x", "0", "70000", "8090-8080", "9000", "8081-8090"] {
            assert!(PortRange::parse_preview(bad).is_err(), "{bad:?}");
        }
        assert_eq!(PortRange::single(8080).to_string(), "8080");
        assert_eq!(
            PortRange {
                first: 8080,
                last: 8090
            }
            .to_string(),
            "8080-8090"
        );
    }
}
