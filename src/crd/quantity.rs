//! A small parser for Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `1e3`), enough to
//! derive requests from limits. k8s-openapi keeps quantities as plain strings.

use thiserror::Error;

/// A quantity that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
#[error("{0:?} is not a Kubernetes quantity (examples: 500m, 2, 512Mi, 1Gi)")]
pub struct QuantityError(pub String);

/// A non-negative quantity in thousandths of its unit (millicores for CPU, millibytes for
/// memory), so that `100m` CPU and `1Ki` bytes are both exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    millis: u128,
}

impl Quantity {
    /// Parses a quantity string.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(text.to_string());
        let s = text.trim();
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let number = number.strip_prefix('+').unwrap_or(number);
        if number.is_empty() || number == "." {
            return Err(err());
        }
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
        {
            return Err(err());
        }
        // value = digits / 10^frac_len, in millis: digits * 1000 / 10^frac_len (times suffix).
        let digits: u128 = format!("{whole}{frac}").parse().map_err(|_| err())?;
        let frac_len = u32::try_from(frac.len()).map_err(|_| err())?;

        let (mul, div): (u128, u128) = match suffix {
            "" => (1000, 1),
            "m" => (1, 1),
            "k" => (1000 * 1000, 1),
            "M" => (1000 * 1000u128.pow(2), 1),
            "G" => (1000 * 1000u128.pow(3), 1),
            "T" => (1000 * 1000u128.pow(4), 1),
            "P" => (1000 * 1000u128.pow(5), 1),
            "E" => (1000 * 1000u128.pow(6), 1),
            "Ki" => (1000 * 1024, 1),
            "Mi" => (1000 * 1024u128.pow(2), 1),
            "Gi" => (1000 * 1024u128.pow(3), 1),
            "Ti" => (1000 * 1024u128.pow(4), 1),
            "Pi" => (1000 * 1024u128.pow(5), 1),
            "Ei" => (1000 * 1024u128.pow(6), 1),
            other => {
                let exp = other
                    .strip_prefix(['e', 'E'])
                    .ok_or_else(err)?
                    .parse::<i32>()
                    .map_err(|_| err())?;
                if exp.unsigned_abs() > 18 {
                    return Err(err());
                }
                if exp >= 0 {
                    (1000 * 10u128.pow(exp.unsigned_abs()), 1)
                } else {
                    (1000, 10u128.pow(exp.unsigned_abs()))
                }
            }
        };
        let scale = 10u128.checked_pow(frac_len).ok_or_else(err)?;
        let numerator = digits.checked_mul(mul).ok_or_else(err)?;
        let denominator = scale.checked_mul(div).ok_or_else(err)?;
        // Round up, as Kubernetes does when a quantity has more precision than it keeps.
        Ok(Self {
            millis: numerator.div_ceil(denominator),
        })
    }

    /// The quantity in thousandths of its unit.
    pub fn millis(self) -> u128 {
        self.millis
    }

    /// The quantity in whole units, rounded up (bytes for memory and storage).
    pub fn units_ceil(self) -> u128 {
        self.millis.div_ceil(1000)
    }

    /// True for zero.
    pub fn is_zero(self) -> bool {
        self.millis == 0
    }

    /// This quantity times `ratio` (0 < ratio <= 1), rounded up, never below `floor_millis`.
    pub fn scaled(self, ratio: f64, floor_millis: u128) -> Self {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1.0)
        } else {
            1.0
        };
        // Integer arithmetic on parts per million keeps this exact for ordinary ratios.
        let ppm = (ratio * 1_000_000.0).round() as u128;
        let millis = self.millis.saturating_mul(ppm).div_ceil(1_000_000);
        Self {
            millis: millis.max(floor_millis).min(self.millis.max(floor_millis)),
        }
    }

    /// Formats as a CPU quantity in millicores (`250m`).
    pub fn to_cpu_string(self) -> String {
        format!("{}m", self.millis)
    }

    /// Formats as a byte count (`536870912`), rounded up to a whole byte.
    pub fn to_bytes_string(self) -> String {
        self.units_ceil().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> u128 {
        Quantity::parse(s).expect("parses").millis()
    }

    #[test]
    fn parses_common_forms() {
        assert_eq!(q("500m"), 500);
        assert_eq!(q("2"), 2000);
        assert_eq!(q("1.5"), 1500);
        assert_eq!(q("0.1"), 100);
        assert_eq!(q("1Ki"), 1_024_000);
        assert_eq!(q("512Mi"), 512 * 1024 * 1024 * 1000);
        assert_eq!(q("1Gi"), 1024u128.pow(3) * 1000);
        assert_eq!(q("1G"), 1_000_000_000_000);
        assert_eq!(q("1e3"), 1_000_000);
        assert_eq!(q("1.5Gi"), 1536 * 1024 * 1024 * 1000);
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "abc", "1X", "-1", "1..2", ".", "Mi", "1 Gi", "1e99"] {
            assert!(Quantity::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn scales_requests_from_limits() {
        let cpu = Quantity::parse("1").expect("cpu");
        assert_eq!(cpu.scaled(0.1, 1).to_cpu_string(), "100m");
        assert_eq!(cpu.scaled(1.0, 1).to_cpu_string(), "1000m");
        let tiny = Quantity::parse("5m").expect("tiny");
        assert_eq!(tiny.scaled(0.1, 1).to_cpu_string(), "1m");
        let mem = Quantity::parse("512Mi").expect("mem");
        assert_eq!(
            mem.scaled(0.25, 1000).to_bytes_string(),
            (128u64 * 1024 * 1024).to_string()
        );
    }
}
