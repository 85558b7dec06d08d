//! Shared configuration helpers: durations written as strings, and the validation error type.
//!
//! Every config struct in this crate is a serde type with `deny_unknown_fields`; fields that hold
//! a duration are written as strings (`250ms`, `10s`, `5m`, `1h`, `1.5s`, or bare seconds `30`)
//! and parsed by the one function [`parse_duration`], through the [`ConfigDuration`] newtype.
//! Semantic checks that serde cannot express (loopback-only `auth: none`, no `none`/HS* algorithms,
//! regexes that compile…) return a [`ConfigError`] naming the offending field by its dotted path.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A config value that is invalid, with the dotted path of the field (`auth.jwt.algorithms[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending field.
    pub field: String,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl ConfigError {
    /// A config error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {why} (write e.g. 250ms, 10s, 5m, 1h, 1.5s or bare seconds)")]
pub struct DurationError {
    input: String,
    why: &'static str,
}

/// Parses `250ms`, `10s`, `5m`, `1h`, `1.5s`, `2d` or bare (possibly fractional) seconds `30`.
///
/// Kept deliberately minimal: one number and one unit, no spaces inside, no negative values.
///
/// # Errors
/// A [`DurationError`] quoting the input when it is empty, negative, has an unknown unit or
/// overflows.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err("no number"));
    }
    let value: f64 = num.parse().map_err(|_| err("not a number"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(err("unknown unit")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1.0e12 {
        return Err(err("too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration in config, written as a string and parsed by [`parse_duration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// A duration of `secs` seconds.
    pub const fn secs(secs: u64) -> Self {
        ConfigDuration(Duration::from_secs(secs))
    }
    /// A duration of `ms` milliseconds.
    pub const fn millis(ms: u64) -> Self {
        ConfigDuration(Duration::from_millis(ms))
    }
    /// The parsed duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 250ms, 10s, 5m, 1h or bare seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConfigDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| ConfigDuration(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                parse_duration(&v.to_string())
                    .map(ConfigDuration)
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            s.serialize_str(&format!("{}s", ms / 1000))
        } else {
            s.serialize_str(&format!("{ms}ms"))
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("30", Duration::from_secs(30)),
            ("0.25", Duration::from_millis(250)),
            ("2d", Duration::from_secs(172_800)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s).unwrap(), d, "{s}");
        }
        for bad in ["", "ms", "10x", "-1s", "1.2.3s", "10 s", "1e400"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn config_duration_from_json() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct C {
            t: ConfigDuration,
        }
        let c: C = serde_json::from_str(r#"{"t":"1.5s"}"#).unwrap();
        assert_eq!(c.t.get(), Duration::from_millis(1500));
        let c: C = serde_json::from_str(r#"{"t":7}"#).unwrap();
        assert_eq!(c.t.get(), Duration::from_secs(7));
        let e = serde_json::from_str::<C>(r#"{"t":"7 parsecs"}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("invalid duration"), "{e}");
        let e = serde_json::from_str::<C>(r#"{"t":"1s","u":1}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown field `u`"), "{e}");
    }
}
