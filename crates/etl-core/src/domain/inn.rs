use std::fmt;

use serde::{Deserialize, Serialize};

/// A Russian taxpayer number (ИНН): 10 digits for organisations, 12 for
/// individuals, with the check digits the Federal Tax Service defines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Inn(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InnError {
    #[error("INN must be 10 or 12 digits, got {0:?}")]
    Shape(String),
    #[error("INN {0} has a wrong check digit")]
    Checksum(String),
}

const W10: [u32; 9] = [2, 4, 10, 3, 5, 9, 4, 6, 8];
const W11: [u32; 10] = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8];
const W12: [u32; 11] = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8];

fn check_digit(digits: &[u32], weights: &[u32]) -> u32 {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    sum % 11 % 10
}

impl Inn {
    pub fn parse(s: &str) -> Result<Self, InnError> {
        if !(s.len() == 10 || s.len() == 12) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InnError::Shape(s.chars().take(40).collect()));
        }
        let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
        let valid = if d.len() == 10 {
            check_digit(&d[..9], &W10) == d[9]
        } else {
            check_digit(&d[..10], &W11) == d[10] && check_digit(&d[..11], &W12) == d[11]
        };
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InnError::Checksum(s.to_owned()))
        }
    }

    /// Completes a 9-digit (or 11-digit) prefix with its check digit(s);
    /// used to generate valid example data.
    pub fn with_check_digits(prefix: &str) -> Option<Self> {
        let mut d: Vec<u32> = prefix
            .chars()
            .map(|c| c.to_digit(10))
            .collect::<Option<_>>()?;
        match d.len() {
            9 => d.push(check_digit(&d, &W10)),
            10 => {
                d.push(check_digit(&d, &W11));
                d.push(check_digit(&d, &W12));
            }
            _ => return None,
        }
        Some(Self(
            d.iter()
                .map(|x| char::from_digit(*x, 10).unwrap_or('0'))
                .collect(),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Inn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Inn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_real_inns_are_valid() {
        // Sberbank, Gazprom (10 digits) and a published 12-digit example.
        for inn in ["7707083893", "7736050003", "500100732259"] {
            Inn::parse(inn).unwrap();
        }
    }

    #[test]
    fn a_changed_digit_breaks_the_checksum() {
        assert_eq!(
            Inn::parse("7707083894"),
            Err(InnError::Checksum("7707083894".into()))
        );
        assert!(matches!(
            Inn::parse("500100732258"),
            Err(InnError::Checksum(_))
        ));
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        for s in [
            "",
            "123",
            "77070838931",
            "770708389a",
            " 7707083893",
            "７７０７０８３８９３",
        ] {
            assert!(matches!(Inn::parse(s), Err(InnError::Shape(_))), "{s:?}");
        }
    }

    #[test]
    fn generated_check_digits_validate() {
        for prefix in ["770708389", "123456789", "0000000000", "5001007322"] {
            let inn = Inn::with_check_digits(prefix).unwrap();
            Inn::parse(inn.as_str()).unwrap();
            assert!(inn.as_str().starts_with(prefix));
        }
        assert!(Inn::with_check_digits("12").is_none());
    }
}
