use std::fmt;

/// A Russian individual insurance account number (СНИЛС): 9 digits and a
/// 2-digit checksum, written here as 11 digits without separators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snils(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnilsError {
    #[error("SNILS must be 11 digits, got {0:?}")]
    Shape(String),
    #[error("SNILS {number} has a wrong checksum: its last two digits should be {expected:02}")]
    Checksum { number: String, expected: u32 },
}

/// Numbers up to this one were issued before the checksum existed; any
/// check digits are accepted for them.
const LAST_UNCHECKED: u32 = 1_001_998;

impl Snils {
    pub fn parse(s: &str) -> Result<Self, SnilsError> {
        if s.len() != 11 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SnilsError::Shape(s.chars().take(40).collect()));
        }
        let digits: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
        let number = digits[..9].iter().fold(0, |n, d| n * 10 + d);
        let given = digits[9] * 10 + digits[10];
        let expected = checksum(&digits[..9]);
        if number <= LAST_UNCHECKED || given == expected {
            Ok(Self(s.to_owned()))
        } else {
            Err(SnilsError::Checksum {
                number: s.to_owned(),
                expected,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Digits weighted 9 down to 1 from the left; a sum of 100 or 101 is 00,
/// above that it is taken modulo 101 (and 100 is 00 again).
fn checksum(number: &[u32]) -> u32 {
    let sum: u32 = number.iter().zip((1..=9).rev()).map(|(d, w)| d * w).sum();
    match sum {
        0..100 => sum,
        100 | 101 => 0,
        _ => sum % 101 % 100,
    }
}

impl fmt::Display for Snils {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_examples_are_valid() {
        // The Pension Fund's own example, 112-233-445 95 (sum below 100),
        // then sums of 101, 107 (mod 101), 201 (mod 101 is 100) and 202
        // (mod 101 is 0), and a number from before checksums.
        for snils in [
            "11223344595",
            "10007919000",
            "20003959506",
            "15746833200",
            "08765430300",
            "00100199812",
        ] {
            Snils::parse(snils).unwrap();
        }
    }

    #[test]
    fn a_changed_digit_breaks_the_checksum_and_says_what_it_should_be() {
        assert_eq!(
            Snils::parse("11223344594"),
            Err(SnilsError::Checksum {
                number: "11223344594".into(),
                expected: 95
            })
        );
        assert!(matches!(
            Snils::parse("11223344695"),
            Err(SnilsError::Checksum { .. })
        ));
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        for s in [
            "",
            "1122334459",
            "112-233-445 95",
            "1122334459a",
            "112233445951",
        ] {
            assert!(
                matches!(Snils::parse(s), Err(SnilsError::Shape(_))),
                "{s:?}"
            );
        }
    }
}
