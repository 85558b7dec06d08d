//! The one duration grammar of the workspace: every config file (`hub.yaml`, `edge.yaml`,
//! loadtest scenario TOML) and every CLI flag that takes a duration parses it here.
//!
//! Where it sits: at startup only. `dataplane::config::raw`, `edge-agent`'s config and
//! `loadtest`'s CLI and scenario files call [`parse`] or use [`deserialize`] /
//! [`deserialize_option`] as serde `deserialize_with` helpers; nothing on a request path
//! parses durations.
//!
//! The grammar is [`humantime`]'s (a kept crate) plus one rule of ours:
//! - one or more `<number><unit>` spans, optionally separated by spaces: `250ms`, `1.5s`,
//!   `10s`, `5m`, `1h`, `2h 30m`, `90s`;
//! - units: `ns`, `us`/`µs`, `ms`, `s`/`sec`, `m`/`min`, `h`/`hr`, `d`, `w`, and the long
//!   spellings (`seconds`, `minutes`, ...). Note `m` is minutes and `M` is months;
//! - a bare number is seconds (`30`, `1.5`, and `0`), in a string or as a YAML/TOML number;
//! - negative values, fractions of a nanosecond and empty text are errors.
//!
//! Errors name the bad text and show the accepted forms; the YAML layer in front adds the
//! field path (`upstreams[0].request_timeout: invalid duration "soon" ...`), because
//! [`deserialize`] raises its error from inside the deserializer's visitor.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// A duration that does not match the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
    reason: String,
}

impl DurationError {
    fn new(input: &str, reason: impl fmt::Display) -> Self {
        Self {
            input: input.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: {} (use e.g. 250ms, 1.5s, 10s, 5m, 1h; a bare number is seconds)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration in the workspace grammar (see the crate doc).
///
/// Also a clap `value_parser` (`#[arg(value_parser = meshgate_duration::parse)]`).
///
/// # Errors
/// [`DurationError`] naming the text and why it is not a duration.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::new(text, "empty"));
    }
    if is_bare_number(s) {
        // "30" and "1.5" are seconds: give humantime the unit so fractions stay exact.
        let with_unit = format!("{s}s");
        return humantime::parse_duration(&with_unit).map_err(|e| DurationError::new(text, e));
    }
    humantime::parse_duration(s).map_err(|e| DurationError::new(text, e))
}

/// `123` or `1.25`: ASCII digits with at most one inner decimal point.
fn is_bare_number(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

/// Serde `deserialize_with` helper for a `Duration` field: a string in the grammar, or a
/// non-negative number of seconds.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Upstream {
///     #[serde(deserialize_with = "meshgate_duration::deserialize")]
///     request_timeout: std::time::Duration,
/// }
/// ```
///
/// # Errors
/// The format's error built from [`DurationError`]'s text.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// Serde `deserialize_with` helper for an `Option<Duration>` field (use it together with
/// `#[serde(default)]`); an explicit null is `None`.
///
/// # Errors
/// As [`deserialize`].
pub fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_option(OptionVisitor)
}

struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 250ms, 1.5s, 10s, 5m, 1h, or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(secs))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        u64::try_from(secs)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(DurationError::new(&secs.to_string(), "negative")))
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(secs).map_err(|_| {
            E::custom(DurationError::new(
                &secs.to_string(),
                "not a non-negative finite number of seconds",
            ))
        })
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        parse(s).map_err(E::custom)
    }
}

struct OptionVisitor;

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DurationVisitor.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn accepted() {
        let table: &[(&str, Duration)] = &[
            ("250ms", MS(250)),
            ("1.5s", MS(1500)),
            ("10s", S(10)),
            ("5m", S(300)),
            ("1h", S(3600)),
            ("2h 30m", S(9000)),
            ("1m30s", S(90)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("40ns", Duration::from_nanos(40)),
            ("1d", S(86_400)),
            ("5 m", S(300)),
            ("  10s ", S(10)),
            ("10sec", S(10)),
            ("2min", S(120)),
            // bare numbers are seconds
            ("0", Duration::ZERO),
            ("7", S(7)),
            ("30", S(30)),
            ("1.5", MS(1500)),
            ("0.25", MS(250)),
            (" 12 ", S(12)),
        ];
        for (text, want) in table {
            assert_eq!(parse(text).as_ref(), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn refused() {
        let table = [
            "",
            "   ",
            "soon",
            "ms",
            "s10",
            "-1s",
            "-1",
            "5 parsecs",
            "1.s",
            ".5",
            "1..5",
            "10 s s",
            "0.5ns",
            "1.2.3s",
            "1e3s",
        ];
        for text in table {
            let err = parse(text).expect_err(text);
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{text:?}")),
                "{msg} should quote {text:?}"
            );
            assert!(
                msg.contains("250ms"),
                "{msg} should show the accepted forms"
            );
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default, deserialize_with = "deserialize")]
        timeout: Duration,
        #[serde(default, deserialize_with = "deserialize_option")]
        ttl: Option<Duration>,
    }

    #[test]
    fn serde_numbers_strings_and_options() {
        let table: &[(&str, Duration, Option<Duration>)] = &[
            ("timeout: 10", S(10), None),
            ("timeout: 1.5", MS(1500), None),
            ("timeout: '10'", S(10), None),
            ("timeout: 250ms", MS(250), None),
            ("ttl: 5m", Duration::ZERO, Some(S(300))),
            ("ttl: null", Duration::ZERO, None),
            ("ttl: 0", Duration::ZERO, Some(Duration::ZERO)),
        ];
        for (text, timeout, ttl) in table {
            let c: Cfg = yaml_serde::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((c.timeout, c.ttl), (*timeout, *ttl), "{text}");
        }
    }

    #[test]
    fn serde_errors_name_the_field() {
        let table = [
            ("timeout: soon", "timeout: invalid duration \"soon\""),
            ("timeout: -3", "timeout: invalid duration \"-3\": negative"),
            ("ttl: 5 parsecs", "ttl: invalid duration \"5 parsecs\""),
            ("timeout: [1]", "timeout: invalid type: sequence"),
        ];
        for (text, want) in table {
            let e = yaml_serde::from_str::<Cfg>(text)
                .expect_err(text)
                .to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }
}
