//! Reading settings from the environment. `.env` is loaded for development
//! only (existing variables win); every problem names the variable, so a
//! misconfigured pod says `KAFKA_BROKERS is empty` instead of panicking.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{var} {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

/// What `--help` says after the usage: where settings come from, then
/// every setting with its default and meaning (`.env.example`, embedded so
/// that `--help` and the documented list cannot drift apart).
pub const SETTINGS_HELP: &str = concat!(
    "Settings come from the environment, and from a .env file in the working directory for \
     variables the environment does not set.\nEvery variable, with its default (services \
     ignore the ones that are not theirs):\n\n",
    include_str!("../../../.env.example")
);

/// `--help` text: `usage`, then every setting.
pub fn help(usage: &str) -> String {
    format!("{usage}\n\n{SETTINGS_HELP}")
}

/// True when the command line asks for help (`--help` or `-h`).
pub fn help_requested() -> bool {
    std::env::args().skip(1).any(|a| a == "--help" || a == "-h")
}

/// Loads `.env` from the working directory if present. Variables already in
/// the environment are not overridden.
pub fn load_dotenv() {
    dotenvy::dotenv().ok();
}

/// Reads environment variables, optionally under a prefix used by tests to
/// inject their own values without touching the process environment.
#[derive(Clone, Default)]
pub struct Env {
    overrides: Vec<(String, String)>,
}

impl Env {
    pub fn process() -> Self {
        Self::default()
    }

    /// Settings from the given pairs first, then the process environment.
    pub fn with_overrides<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            overrides: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn raw(&self, var: &str) -> Option<String> {
        self.overrides
            .iter()
            .rev()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(var).ok())
    }

    pub fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_owned())
    }

    /// A variable that must be set and non-empty.
    pub fn required(&self, var: &str) -> Result<String, ConfigError> {
        match self.raw(var) {
            None => Err(err(var, "is not set")),
            Some(v) if v.trim().is_empty() => Err(err(var, "is empty")),
            Some(v) => Ok(v),
        }
    }

    /// A variable with a default that must not be set to an empty value.
    pub fn non_empty(&self, var: &str, default: &str) -> Result<String, ConfigError> {
        let v = self.string(var, default);
        if v.trim().is_empty() {
            return Err(err(var, "is empty"));
        }
        Ok(v)
    }

    pub fn parse<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e| err(var, &format!("= {v:?} is invalid: {e}"))),
        }
    }

    pub fn socket_addr(&self, var: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let v = self.string(var, default);
        v.parse()
            .map_err(|e| err(var, &format!("= {v:?} is not host:port: {e}")))
    }

    /// A duration given in milliseconds.
    pub fn millis(&self, var: &str, default_ms: u64) -> Result<Duration, ConfigError> {
        self.parse(var, default_ms).map(Duration::from_millis)
    }

    pub fn bool(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var).as_deref().map(str::trim) {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(err(var, &format!("= {v:?} is not a boolean (true/false)"))),
        }
    }
}

fn err(var: &str, problem: &str) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        problem: problem.to_owned(),
    }
}

/// A value that must never reach a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_problems_name_the_variable() {
        let env = Env::with_overrides([("ETL_TEST_PORT", "nope"), ("ETL_TEST_EMPTY", " ")]);
        let e = env.parse::<u16>("ETL_TEST_PORT", 1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ETL_TEST_PORT = \"nope\" is invalid"),
            "{e}"
        );
        assert_eq!(
            env.required("ETL_TEST_EMPTY").unwrap_err().to_string(),
            "ETL_TEST_EMPTY is empty"
        );
        assert_eq!(
            env.required("ETL_TEST_UNSET_VAR").unwrap_err().to_string(),
            "ETL_TEST_UNSET_VAR is not set"
        );
        assert_eq!(env.parse::<u16>("ETL_TEST_UNSET_VAR", 7).unwrap(), 7);
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
