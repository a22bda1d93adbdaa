//! `CreditCode`: the 18-character unified social credit code
//! (统一社会信用代码) of GB 32100-2015, checked character by character and by
//! its check character. Must not look anything up (registration status etc.).

use super::normalize::fold_ascii;

/// The 31 characters a credit code may use, in the order of their values
/// (GB 32100-2015 leaves out I, O, S, V and Z).
pub const CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Weights of positions 1..=17: 3^i mod 31.
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Why a text is not a unified social credit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("请填写统一社会信用代码")]
    Empty,
    #[error("统一社会信用代码应为18位，当前为{0}位")]
    Length(usize),
    #[error("统一社会信用代码第{position}位“{found}”不是允许的字符（只能是数字和除I、O、S、V、Z以外的大写字母）")]
    Character { position: usize, found: char },
    #[error("统一社会信用代码第3至8位应为行政区划代码（6位数字）")]
    Division,
    #[error("统一社会信用代码校验位不正确，请核对是否输入有误")]
    CheckCharacter,
}

/// A unified social credit code whose characters and check character are
/// correct; always upper case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CreditCode(String);

string_newtype!(CreditCode, Error);

impl std::fmt::Debug for CreditCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreditCode({})", self.0)
    }
}

fn value_of(c: u8) -> Option<u32> {
    CHARSET.iter().position(|&x| x == c).map(|p| p as u32)
}

/// The check character for the first 17 characters, or `None` if one of them
/// is outside the charset.
pub fn check_character(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (b, w) in bytes.iter().zip(WEIGHTS) {
        sum += value_of(*b)? * w;
    }
    let check = (31 - sum % 31) % 31;
    Some(CHARSET[check as usize] as char)
}

impl CreditCode {
    /// Parses a credit code, accepting lower case, full-width characters and
    /// surrounding spaces.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let folded = fold_ascii(input).to_ascii_uppercase();
        if folded.is_empty() {
            return Err(Error::Empty);
        }
        let count = folded.chars().count();
        if count != 18 {
            return Err(Error::Length(count));
        }
        for (i, c) in folded.chars().enumerate() {
            if !c.is_ascii() || value_of(c as u8).is_none() {
                return Err(Error::Character {
                    position: i + 1,
                    found: c,
                });
            }
        }
        if !folded.as_bytes()[2..8].iter().all(u8::is_ascii_digit) {
            return Err(Error::Division);
        }
        let expected = check_character(&folded[..17]).ok_or(Error::CheckCharacter)?;
        if folded.as_bytes()[17] as char != expected {
            return Err(Error::CheckCharacter);
        }
        Ok(Self(folded))
    }

    /// The six-digit administrative division code (positions 3 to 8).
    pub fn division_code(&self) -> &str {
        &self.0[2..8]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Completes 17 characters with their check character.
    pub(crate) fn complete(first17: &str) -> String {
        format!("{first17}{}", check_character(first17).unwrap())
    }

    #[test]
    fn known_published_code_is_accepted() {
        // A generated body, and the code printed as the example in GB 32100-2015 commentary.
        let code = complete("91510100MA61R8XY2");
        assert!(CreditCode::parse(&code).is_ok(), "{code}");
        assert_eq!(check_character("91350100M000100Y4"), Some('3'));
        assert!(CreditCode::parse("91350100M000100Y43").is_ok());
    }

    #[test]
    fn lower_case_and_full_width_input_is_normalised_to_upper_case() {
        let code = complete("91510100MA61R8XY2");
        let lower = format!(" {} ", code.to_lowercase());
        assert_eq!(CreditCode::parse(&lower).unwrap().as_str(), code);
        let full: String = code
            .chars()
            .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap())
            .collect();
        assert_eq!(CreditCode::parse(&full).unwrap().as_str(), code);
    }

    #[test]
    fn every_generated_code_round_trips() {
        // A cheap deterministic sweep over many bodies.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let mut body = String::from("91");
            for i in 0..15 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let c = if i < 6 {
                    (b'0' + (x % 10) as u8) as char
                } else {
                    CHARSET[(x % 31) as usize] as char
                };
                body.push(c);
            }
            let code = complete(&body);
            let parsed = CreditCode::parse(&code).unwrap();
            assert_eq!(parsed.as_str(), code);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(serde_json::from_str::<CreditCode>(&json).unwrap(), parsed);
        }
    }

    #[test]
    fn wrong_check_character_is_refused_with_a_chinese_message() {
        let code = complete("91510100MA61R8XY2");
        let last = code.as_bytes()[17];
        let wrong = CHARSET.iter().find(|&&c| c != last).unwrap();
        let bad = format!("{}{}", &code[..17], *wrong as char);
        let err = CreditCode::parse(&bad).unwrap_err();
        assert_eq!(err, Error::CheckCharacter);
        assert_eq!(
            err.to_string(),
            "统一社会信用代码校验位不正确，请核对是否输入有误"
        );
    }

    #[test]
    fn single_character_typo_is_always_detected() {
        let code = complete("91510100MA61R8XY2");
        for pos in 8..17 {
            for &c in CHARSET {
                if c == code.as_bytes()[pos] {
                    continue;
                }
                let mut typo = code.clone().into_bytes();
                typo[pos] = c;
                let typo = String::from_utf8(typo).unwrap();
                assert!(CreditCode::parse(&typo).is_err(), "{typo} accepted");
            }
        }
    }

    #[test]
    fn empty_and_wrong_length_are_refused() {
        assert_eq!(CreditCode::parse("  ").unwrap_err(), Error::Empty);
        assert_eq!(CreditCode::parse("9151010").unwrap_err(), Error::Length(7));
        assert_eq!(
            CreditCode::parse("9151010").unwrap_err().to_string(),
            "统一社会信用代码应为18位，当前为7位"
        );
    }

    #[test]
    fn letters_i_o_s_v_z_are_refused_with_their_position() {
        for bad in ['I', 'O', 'S', 'V', 'Z', '-', '码'] {
            let mut s: Vec<char> = complete("91510100MA61R8XY2").chars().collect();
            s[10] = bad;
            let s: String = s.into_iter().collect();
            assert_eq!(
                CreditCode::parse(&s).unwrap_err(),
                Error::Character {
                    position: 11,
                    found: bad
                }
            );
        }
    }

    #[test]
    fn division_code_must_be_digits() {
        let code = complete("9151A100MA61R8XY2");
        assert_eq!(CreditCode::parse(&code).unwrap_err(), Error::Division);
        let ok = CreditCode::parse(&complete("91510100MA61R8XY2")).unwrap();
        assert_eq!(ok.division_code(), "510100");
    }

    #[test]
    fn deserialize_goes_through_parse() {
        let err = serde_json::from_str::<CreditCode>("\"915101000000000000\"").unwrap_err();
        assert!(err.to_string().contains("校验位"), "{err}");
    }
}
