//! Sizes given on the command line: `123456`, `512M`, `8G`, `1.5GiB`.

use std::fmt;
use std::str::FromStr;

/// A number of bytes (K/M/G/T are powers of 1000, KiB/MiB/GiB/TiB of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "unknown unit `{other}` (use K, M, G, KiB, MiB, GiB)"
                ))
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{s}` is not a number of bytes"))?;
        Ok(Self((value * scale) as u64))
    }
}

impl fmt::Display for ByteSize {
    /// Whole MiB when the size is one, else bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        if self.0 >= MIB && self.0.is_multiple_of(MIB) {
            write!(f, "{} MiB", self.0 / MIB)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_print() {
        assert_eq!("1000".parse(), Ok(ByteSize(1000)));
        assert_eq!("2K".parse(), Ok(ByteSize(2000)));
        assert_eq!("1.5GiB".parse(), Ok(ByteSize(1_610_612_736)));
        assert_eq!("512 MiB".parse(), Ok(ByteSize(536_870_912)));
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("5 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64 MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 bytes");
    }
}
