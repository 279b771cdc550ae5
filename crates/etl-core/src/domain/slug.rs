use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest slug we produce: a DNS label, short enough for S3 keys and Kafka keys.
const MAX_LEN: usize = 63;

/// The company part of an S3 key and the Kafka key: lower-case ASCII
/// `[a-z0-9-]{1,63}`, no leading/trailing or doubled `-`, so it can never be a
/// path separator, `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CompanySlug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("company name {0:?} has no letters or digits to build a slug from")]
    Empty(String),
    #[error("{0:?} is not a company slug (expected [a-z0-9-]{{1,63}})")]
    Invalid(String),
}

impl CompanySlug {
    /// Builds the slug of a company name: transliterates (Cyrillic and other
    /// scripts to ASCII), lower-cases, and turns every run of other
    /// characters into a single `-`.
    pub fn from_name(name: &str) -> Result<Self, SlugError> {
        let ascii = deunicode::deunicode(name);
        let mut slug = String::with_capacity(ascii.len().min(MAX_LEN));
        let mut pending_dash = false;
        for c in ascii.chars() {
            if c.is_ascii_alphanumeric() {
                if pending_dash && !slug.is_empty() {
                    if slug.len() + 1 >= MAX_LEN {
                        break;
                    }
                    slug.push('-');
                }
                pending_dash = false;
                slug.push(c.to_ascii_lowercase());
                if slug.len() == MAX_LEN {
                    break;
                }
            } else {
                pending_dash = true;
            }
        }
        if slug.is_empty() {
            return Err(SlugError::Empty(truncate_for_message(name)));
        }
        Ok(Self(slug))
    }

    /// Accepts an already-built slug (from a Kafka key or an event), checking
    /// it has the shape `from_name` produces.
    pub fn parse(s: &str) -> Result<Self, SlugError> {
        let well_formed = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--");
        if well_formed {
            Ok(Self(s.to_owned()))
        } else {
            Err(SlugError::Invalid(truncate_for_message(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(80).collect()
}

impl AsRef<str> for CompanySlug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CompanySlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CompanySlug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slug(name: &str) -> String {
        CompanySlug::from_name(name).unwrap().as_str().to_owned()
    }

    #[test]
    fn latin_names_are_lowercased_and_dashed() {
        assert_eq!(slug("Acme Widgets, Inc."), "acme-widgets-inc");
        assert_eq!(slug("  --Hello__World--  "), "hello-world");
    }

    #[test]
    fn cyrillic_names_are_transliterated() {
        assert_eq!(slug("Газпром"), "gazprom");
        assert_eq!(slug("ООО «Ромашка»"), "ooo-romashka");
        assert_eq!(slug("Яндекс Лавка"), "iandeks-lavka");
    }

    #[test]
    fn names_without_letters_or_digits_have_no_slug() {
        for name in ["", "   ", "!!!", "«»", "../..", "\0"] {
            assert!(
                matches!(CompanySlug::from_name(name), Err(SlugError::Empty(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn path_tricks_never_survive() {
        assert_eq!(slug("../../etc/passwd"), "etc-passwd");
        assert_eq!(slug("%2e%2e/secret"), "2e-2e-secret");
        assert_eq!(slug("a\0b"), "a-b");
    }

    #[test]
    fn long_names_are_cut_to_63_without_trailing_dash() {
        let s = slug(&"ab ".repeat(5000));
        assert!(s.len() <= 63, "{}", s.len());
        assert!(!s.ends_with('-'));
        CompanySlug::parse(&s).unwrap();
    }

    #[test]
    fn every_built_slug_parses_back() {
        for name in [
            "Газпром нефть",
            "X",
            "Société Générale",
            "日本電信電話",
            "a-b--c",
        ] {
            let built = CompanySlug::from_name(name).unwrap();
            assert_eq!(CompanySlug::parse(built.as_str()).unwrap(), built);
        }
    }

    #[test]
    fn parse_rejects_malformed_slugs() {
        for s in ["", "-a", "a-", "a--b", "A", "a/b", "..", &"a".repeat(64)] {
            assert!(CompanySlug::parse(s).is_err(), "{s:?}");
        }
    }
}
