//! `Mobile`: a mainland mobile number `1[3-9]\d{9}`, the number SMS goes to.
//! Accepts the spaces, hyphens and `+86` prefix people type; stores the 11
//! digits. Must not decide whether the number is reachable.

use super::normalize::fold_ascii;

/// Why a text is not a mobile number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("请填写手机号码")]
    Empty,
    #[error("手机号码应为以1开头的11位数字（第二位为3至9）")]
    Format,
}

/// An 11-digit mainland mobile number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mobile(String);

string_newtype!(Mobile, Error);

impl std::fmt::Debug for Mobile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mobile({})", self.masked())
    }
}

impl Mobile {
    /// Parses a mobile number, ignoring spaces, hyphens and a `+86`/`0086`
    /// country prefix.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let folded = fold_ascii(input);
        if folded.is_empty() {
            return Err(Error::Empty);
        }
        let mut digits: String = folded
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '\u{3000}'))
            .collect();
        for prefix in ["+86", "0086"] {
            if let Some(rest) = digits.strip_prefix(prefix) {
                digits = rest.to_owned();
                break;
            }
        }
        if digits.len() == 13 && digits.starts_with("86") {
            digits.drain(..2);
        }
        let b = digits.as_bytes();
        let ok = b.len() == 11
            && b.iter().all(u8::is_ascii_digit)
            && b[0] == b'1'
            && (b'3'..=b'9').contains(&b[1]);
        if !ok {
            return Err(Error::Format);
        }
        Ok(Self(digits))
    }

    /// The form shown in logs: `138****5678`.
    pub fn masked(&self) -> String {
        format!("{}****{}", &self.0[..3], &self.0[7..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_eleven_digits_are_accepted() {
        for m in ["13800138000", "19912345678", "15008001234"] {
            assert_eq!(Mobile::parse(m).unwrap().as_str(), m);
        }
    }

    #[test]
    fn spaces_hyphens_full_width_and_country_prefix_are_removed() {
        for m in [
            "138 0013 8000",
            "138-0013-8000",
            "+86 13800138000",
            "008613800138000",
            "8613800138000",
            "１３８００１３８０００",
        ] {
            assert_eq!(Mobile::parse(m).unwrap().as_str(), "13800138000", "{m}");
        }
    }

    #[test]
    fn second_digit_below_three_is_refused() {
        assert_eq!(Mobile::parse("12800138000").unwrap_err(), Error::Format);
        assert_eq!(Mobile::parse("10800138000").unwrap_err(), Error::Format);
    }

    #[test]
    fn wrong_length_letters_and_landlines_are_refused() {
        for m in [
            "1380013800",
            "138001380001",
            "1380013800a",
            "02884527022",
            "84527022",
        ] {
            assert_eq!(Mobile::parse(m).unwrap_err(), Error::Format, "{m}");
        }
        assert_eq!(Mobile::parse(" ").unwrap_err(), Error::Empty);
        assert_eq!(
            Mobile::parse("123").unwrap_err().to_string(),
            "手机号码应为以1开头的11位数字（第二位为3至9）"
        );
    }

    #[test]
    fn masked_and_debug_hide_the_middle_digits() {
        let m = Mobile::parse("13800138000").unwrap();
        assert_eq!(m.masked(), "138****8000");
        assert_eq!(format!("{m:?}"), "Mobile(138****8000)");
        assert_eq!(m.to_string(), "13800138000");
    }

    #[test]
    fn deserialize_goes_through_parse() {
        let m: Mobile = serde_json::from_str("\"+86 138 0013 8000\"").unwrap();
        assert_eq!(m.as_ref(), "13800138000");
        assert!(serde_json::from_str::<Mobile>("\"110\"").is_err());
    }
}
