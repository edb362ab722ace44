//! Value types of the configuration: addresses, durations and sizes, each
//! accepting the spellings operators write and rejecting the rest with a
//! message that shows a correct one.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A `host:port` address. Host names are kept as written and resolved when
/// used, so a configuration can name hosts that are not up yet. Port 0 parses
/// (a listener bound on it gets a port from the kernel); validation refuses
/// it where an address is advertised or dialled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    pub fn new(host: &str, port: u16) -> Address {
        Address {
            host: host.to_string(),
            port,
        }
    }

    /// Parses `host:port`, `[v6]:port` or `v4:port`.
    pub fn parse(s: &str) -> Result<Address, String> {
        let hint = "write it as host:port, for example 127.0.0.1:8001 or node1.example.com:8001";
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((host, port)) = rest.split_once("]:") else {
                return Err(format!("\"{s}\" is not an address; {hint}"));
            };
            (host, port)
        } else {
            let Some((host, port)) = s.rsplit_once(':') else {
                return Err(format!("\"{s}\" has no port; {hint}"));
            };
            if host.contains(':') {
                return Err(format!(
                    "\"{s}\" looks like an IPv6 address without brackets; write [{host}]:{port}"
                ));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(format!("\"{s}\" has no host; {hint}"));
        }
        let valid_host = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !valid_host {
            return Err(format!("\"{s}\" has an invalid host name; {hint}"));
        }
        let Ok(port) = port.parse::<u16>() else {
            return Err(format!(
                "\"{s}\" has an invalid port (0-65535 expected); {hint}"
            ));
        };
        Ok(Address {
            host: host.to_string(),
            port,
        })
    }

    /// True for 0.0.0.0 and ::, which can be bound but never advertised.
    pub fn is_unspecified(&self) -> bool {
        matches!(self.host.as_str(), "0.0.0.0" | "::" | "[::]")
    }

    /// True when only this host can connect: a loopback IP or `localhost`.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(de::Error::custom)
    }
}

/// A duration in milliseconds: an integer (ms) or a string such as `"250ms"`,
/// `"2s"`, `"1m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

impl Millis {
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }

    pub fn parse(s: &str) -> Result<Millis, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || {
            format!(
                "\"{s}\" is not a duration; write integer milliseconds or a string such as \"250ms\", \"2s\" or \"1m\""
            )
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        let factor = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        n.checked_mul(factor).map(Millis).ok_or_else(bad)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms != 0 && ms % 60_000 == 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms != 0 && ms % 1_000 == 0 {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Millis;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration: integer milliseconds or a string such as \"250ms\", \"2s\"",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Millis, E> {
                u64::try_from(v)
                    .map(Millis)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Millis, E> {
                Ok(Millis(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Millis, E> {
                Millis::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes. Integers are bytes (or MiB for keys read through
/// [`mebibytes`]); strings carry a unit: `B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`,
/// `GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str, bare_unit: u64) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || {
            format!(
                "\"{s}\" is not a size; write an integer or a string such as \"512KiB\", \"64MiB\" or \"1GiB\""
            )
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        let factor = match unit.trim() {
            "" => bare_unit,
            "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(factor).map(ByteSize).ok_or_else(bad)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b % (1 << 30) == 0 {
            write!(f, "{}GiB", b >> 30)
        } else if b != 0 && b % (1 << 20) == 0 {
            write!(f, "{}MiB", b >> 20)
        } else if b != 0 && b % (1 << 10) == 0 {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

struct SizeVisitor {
    bare_unit: u64,
}

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size: an integer or a string such as \"64MiB\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        let v = u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))?;
        self.visit_u64(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        v.checked_mul(self.bare_unit)
            .map(ByteSize)
            .ok_or_else(|| E::custom("size too large"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        ByteSize::parse(v, self.bare_unit).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor { bare_unit: 1 })
    }
}

/// Serde adapter for sizes whose bare integers count MiB (the original
/// Ferrium's `block_cache_size = 64` meant 64 MiB).
pub mod mebibytes {
    use super::{ByteSize, SizeVisitor};
    use serde::{Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        d.deserialize_any(SizeVisitor { bare_unit: 1 << 20 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Millis::parse("250ms"), Ok(Millis(250)));
        assert_eq!(Millis::parse("2s"), Ok(Millis(2000)));
        assert_eq!(Millis::parse("1m"), Ok(Millis(60_000)));
        assert_eq!(Millis::parse("300"), Ok(Millis(300)));
        assert!(Millis::parse("2x").is_err());
        assert!(Millis::parse("-5ms").is_err());
        assert!(Millis::parse("").is_err());
        assert_eq!(Millis(1500).to_string(), "1500ms");
        assert_eq!(Millis(2000).to_string(), "2s");
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64MiB", 1), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("64", 1 << 20), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("1KB", 1), Ok(ByteSize(1000)));
        assert!(ByteSize::parse("64 parsecs", 1).is_err());
        assert!(ByteSize::parse("99999999999999GiB", 1).is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("localhost:80"),
            Ok(Address::new("localhost", 80))
        );
        assert_eq!(Address::parse("[::1]:80"), Ok(Address::new("::1", 80)));
        assert_eq!(Address::new("::1", 80).to_string(), "[::1]:80");
        assert!(Address::parse("localhost").is_err());
        assert_eq!(Address::parse("host:0"), Ok(Address::new("host", 0)));
        assert!(Address::parse("host:99999").is_err());
        assert!(Address::parse(":80").is_err());
        assert!(Address::parse("::1:80").is_err());
        assert!(Address::parse("bad host:80").is_err());
        assert!(Address::parse("0.0.0.0:80").unwrap().is_unspecified());
    }
}
