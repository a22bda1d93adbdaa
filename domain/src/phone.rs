//! `Phone`: a contact number that may be a landline (Chengdu numbers are 8
//! digits, optionally with area code `028-`) or a mobile. Used for the
//! district liaison officers of Attachment 2. Must not be used where an SMS
//! must arrive: that is `Mobile`.

use super::normalize::fold_ascii;

/// Why a text is not a phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("请填写联系电话")]
    Empty,
    #[error("联系电话应为7至8位座机号码（可带区号，如028-84527022）或11位手机号码")]
    Format,
}

/// A landline (optionally with area code) or mobile number, digits and at
/// most one hyphen after the area code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

string_newtype!(Phone, Error);

impl Phone {
    /// Parses a phone number; spaces are removed.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let s: String = fold_ascii(input).chars().filter(|c| *c != ' ').collect();
        if s.is_empty() {
            return Err(Error::Empty);
        }
        let digits = |t: &str, lo: usize, hi: usize| {
            (lo..=hi).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
        };
        let ok = match s.split_once('-') {
            Some((area, local)) => {
                area.starts_with('0') && digits(area, 3, 4) && digits(local, 7, 8)
            }
            None => {
                digits(&s, 7, 8)
                    || (digits(&s, 11, 11) && s.starts_with('1'))
                    || (digits(&s, 10, 12) && s.starts_with('0'))
            }
        };
        if !ok {
            return Err(Error::Format);
        }
        Ok(Self(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landlines_with_and_without_area_code_and_mobiles_are_accepted() {
        for p in [
            "84527022",
            "028-84527022",
            "02884527022",
            "13800138000",
            "8452702",
        ] {
            assert_eq!(Phone::parse(p).unwrap().as_str(), p);
        }
    }

    #[test]
    fn malformed_numbers_are_refused() {
        for p in ["845270", "28-84527022", "028-845", "8452a022", "0-1-2"] {
            assert_eq!(Phone::parse(p).unwrap_err(), Error::Format, "{p}");
        }
        assert_eq!(Phone::parse("").unwrap_err(), Error::Empty);
    }
}
