//! The generic half of the settings: one struct per subsystem derives both
//! its flags (clap `Args`, each default in its `#[arg(default_value...)]`)
//! and its keys in the file (serde `Deserialize` with `#[serde(default)]`).
//!
//! * The file's missing keys take the defaults clap declares:
//!   [`clap_defaults`] parses an empty command line with the env variables
//!   switched off, and [`clap_default!`] makes that the struct's `Default`,
//!   which `#[serde(default)]` uses.
//! * Flags and env variables win over the file: [`given`] keeps, of the
//!   parsed command line, only the values that came from a flag or an env
//!   variable (clap's `value_source`), and clap's own
//!   `FromArgMatches::update_from_arg_matches` writes those over the
//!   values read from the file.

use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// `T` with every value at the default its flags declare (no command line,
/// no env variables).
pub(crate) fn clap_defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(Command::new("defaults").no_binary_name(true))
        .mut_args(|a| a.env(None::<&'static str>));
    // Invariant: the defaults parse (config::tests::defaults_parse checks
    // every subsystem's).
    let m = cmd
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("option defaults parse");
    T::from_arg_matches(&m).expect("option defaults convert")
}

/// `impl Default` from the defaults the flags declare, for
/// `#[serde(default)]`.
macro_rules! clap_default {
    ($($t:ty),+ $(,)?) => {$(
        impl Default for $t {
            fn default() -> Self {
                $crate::config::merge::clap_defaults()
            }
        }
    )+};
}
pub(crate) use clap_default;

/// The matches of values given by flag or env variable: those from
/// defaults are cleared, so that updating from them leaves the file's
/// values in place.
pub(crate) fn given(m: &ArgMatches) -> ArgMatches {
    let mut given = m.clone();
    let defaulted: Vec<String> = m
        .ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::DefaultValue))
        .map(|id| id.as_str().to_owned())
        .collect();
    for id in defaulted {
        // The ids come from these matches, so they are valid.
        let _ = given.try_clear_id(&id);
    }
    given
}

/// The keys a derived `Deserialize` struct reads: serde hands its field
/// list to `deserialize_struct`, where this probe keeps it.
pub(crate) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// A flag's value in whole seconds.
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| e.to_string())
}

/// A key's value in whole seconds (a TOML integer).
pub(crate) fn de_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A duration kept within `[min, max]` seconds.
pub(crate) fn clamp_secs(d: Duration, min: u64, max: u64) -> Duration {
    d.clamp(Duration::from_secs(min), Duration::from_secs(max))
}
