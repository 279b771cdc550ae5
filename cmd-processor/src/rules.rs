//! Business rules a JSON Schema cannot say (a checksum), registered with
//! the schema compiler as custom formats, so any dataset's schema can ask
//! for one by name: `"format": "inn"`.

use etl_core::domain::{Inn, Snils};

/// A rule: its format name and its check, which says why a value fails.
pub struct Rule {
    pub format: &'static str,
    pub check: fn(&str) -> Result<(), String>,
}

pub const RULES: [Rule; 2] = [
    Rule {
        format: "inn",
        check: |value| Inn::parse(value).map(|_| ()).map_err(|e| e.to_string()),
    },
    Rule {
        format: "snils",
        check: |value| Snils::parse(value).map(|_| ()).map_err(|e| e.to_string()),
    },
];

/// Why `value` fails the rule registered as `format`; `None` for a format
/// that is not one of ours (the schema language's own: date, uri ...).
pub fn explain(format: &str, value: &str) -> Option<String> {
    let rule = RULES.iter().find(|r| r.format == format)?;
    (rule.check)(value).err()
}

/// Registers every rule with the schema compiler.
pub fn register(
    mut options: jsonschema::ValidationOptions<'_>,
) -> jsonschema::ValidationOptions<'_> {
    for rule in RULES {
        options = options.with_format(rule.format, move |value| (rule.check)(value).is_ok());
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_says_why_a_value_fails_and_passes_a_good_one() {
        assert_eq!(explain("inn", "7707083893"), None);
        assert_eq!(
            explain("inn", "7707083894").as_deref(),
            Some("INN 7707083894 has a wrong check digit")
        );
        assert_eq!(explain("snils", "11223344595"), None);
        assert_eq!(
            explain("snils", "11223344594").as_deref(),
            Some("SNILS 11223344594 has a wrong checksum: its last two digits should be 95")
        );
        assert_eq!(explain("date", "yesterday"), None, "not one of ours");
    }
}
