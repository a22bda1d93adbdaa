//! `IdNumber`: the 18-character resident identity card number (居民身份证号码)
//! of GB 11643-1999: province code, plausible birth date, check digit. Also
//! the masked form shown in lists and logs. Must not look anything up, and
//! must not let the full number reach `Debug` output (logs).

use chrono::{Datelike, NaiveDate, Utc};

use super::normalize::fold_ascii;

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: &[u8; 11] = b"10X98765432";
/// Province-level codes (first two digits), including 71/81/82/83 used for
/// Taiwan, Hong Kong and Macao residents.
const PROVINCES: [u8; 35] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83,
];

/// Why a text is not a resident ID number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("请填写身份证号码")]
    Empty,
    #[error("身份证号码应为18位，当前为{0}位")]
    Length(usize),
    #[error("身份证号码前17位应为数字，最后一位为数字或X")]
    Character,
    #[error("身份证号码前两位不是有效的省级行政区划代码")]
    Province,
    #[error("身份证号码中的出生日期不正确")]
    BirthDate,
    #[error("身份证号码校验位不正确，请核对是否输入有误")]
    CheckDigit,
}

/// A resident ID number with a valid province, birth date and check digit;
/// a trailing `x` is stored as `X`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdNumber(String);

string_newtype!(IdNumber, Error);

impl std::fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdNumber({})", self.masked())
    }
}

/// The check digit for 17 ASCII digits, or `None` if they are not that.
pub fn check_digit(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    Some(CHECK[(sum % 11) as usize] as char)
}

/// Today in Asia/Shanghai (UTC+8), the latest plausible birth date.
fn today_in_china() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(8)).date_naive()
}

impl IdNumber {
    /// Parses an ID number; the birth date must not lie after today.
    pub fn parse(input: &str) -> Result<Self, Error> {
        Self::parse_on(input, today_in_china())
    }

    /// Parses an ID number whose birth date must lie between 1900-01-01 and
    /// `today` (pure: no clock is read).
    pub fn parse_on(input: &str, today: NaiveDate) -> Result<Self, Error> {
        let mut s = fold_ascii(input);
        if s.is_empty() {
            return Err(Error::Empty);
        }
        let count = s.chars().count();
        if count != 18 {
            return Err(Error::Length(count));
        }
        if s.ends_with('x') {
            s.pop();
            s.push('X');
        }
        let b = s.as_bytes();
        if !b[..17].iter().all(u8::is_ascii_digit) || !(b[17].is_ascii_digit() || b[17] == b'X') {
            return Err(Error::Character);
        }
        let province = (b[0] - b'0') * 10 + (b[1] - b'0');
        if !PROVINCES.contains(&province) {
            return Err(Error::Province);
        }
        let birth = NaiveDate::parse_from_str(&s[6..14], "%Y%m%d").map_err(|_| Error::BirthDate)?;
        if birth.year() < 1900 || birth > today {
            return Err(Error::BirthDate);
        }
        if check_digit(&s[..17]) != Some(b[17] as char) {
            return Err(Error::CheckDigit);
        }
        Ok(Self(s))
    }

    /// The birth date encoded in positions 7 to 14.
    pub fn birth_date(&self) -> NaiveDate {
        NaiveDate::parse_from_str(&self.0[6..14], "%Y%m%d").expect("checked by parse")
    }

    /// The six-digit administrative division code of the place of issue.
    pub fn region_code(&self) -> &str {
        &self.0[..6]
    }

    /// The form shown in lists and logs: first four and last four characters,
    /// ten asterisks between, e.g. `5101**********123X`.
    pub fn masked(&self) -> String {
        format!("{}**********{}", &self.0[..4], &self.0[14..])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn complete(first17: &str) -> String {
        format!("{first17}{}", check_digit(first17).unwrap())
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2022, 6, 1).unwrap()
    }

    #[test]
    fn standard_example_with_x_check_digit_is_accepted() {
        // The example of GB 11643-1999.
        let id = IdNumber::parse_on("11010519491231002X", today()).unwrap();
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
        assert_eq!(id.region_code(), "110105");
    }

    #[test]
    fn lowercase_x_is_accepted_and_stored_upper_case() {
        let id = IdNumber::parse_on(" 11010519491231002x ", today()).unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
    }

    #[test]
    fn generated_chengdu_numbers_round_trip_through_serde() {
        for (i, day) in ["19900307", "20000229", "19651120", "20211231"]
            .iter()
            .enumerate()
        {
            let id = complete(&format!("510104{day}12{i}"));
            let parsed = IdNumber::parse_on(&id, today()).unwrap();
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(json, format!("\"{id}\""));
            assert_eq!(serde_json::from_str::<IdNumber>(&json).unwrap(), parsed);
        }
    }

    #[test]
    fn masked_keeps_first_four_and_last_four() {
        let id = IdNumber::parse_on(&complete("51010119900307123"), today()).unwrap();
        assert_eq!(id.masked(), "5101**********1238");
        assert_eq!(id.masked().chars().count(), 18);
    }

    #[test]
    fn debug_output_never_shows_the_full_number() {
        let id = IdNumber::parse_on("11010519491231002X", today()).unwrap();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("11010519491231002X"), "{dbg}");
        assert!(dbg.contains("1101**********002X"), "{dbg}");
    }

    #[test]
    fn wrong_check_digit_is_refused() {
        let err = IdNumber::parse_on("110105194912310021", today()).unwrap_err();
        assert_eq!(err, Error::CheckDigit);
        assert_eq!(
            err.to_string(),
            "身份证号码校验位不正确，请核对是否输入有误"
        );
    }

    #[test]
    fn every_single_digit_typo_is_detected() {
        let id = complete("51010119900307123");
        for pos in 0..18 {
            for d in b'0'..=b'9' {
                if d == id.as_bytes()[pos] {
                    continue;
                }
                let mut typo = id.clone().into_bytes();
                typo[pos] = d;
                let typo = String::from_utf8(typo).unwrap();
                assert!(IdNumber::parse_on(&typo, today()).is_err(), "{typo}");
            }
        }
    }

    #[test]
    fn impossible_birth_dates_are_refused() {
        for day in ["19900230", "19901301", "18991231", "20220602"] {
            let id = complete(&format!("510101{day}123"));
            assert_eq!(
                IdNumber::parse_on(&id, today()).unwrap_err(),
                Error::BirthDate,
                "{day}"
            );
        }
    }

    #[test]
    fn unknown_province_is_refused() {
        let id = complete("99010119900307123");
        assert_eq!(
            IdNumber::parse_on(&id, today()).unwrap_err(),
            Error::Province
        );
    }

    #[test]
    fn bad_shape_is_refused() {
        assert_eq!(IdNumber::parse_on("", today()).unwrap_err(), Error::Empty);
        assert_eq!(
            IdNumber::parse_on("5101011990030712", today()).unwrap_err(),
            Error::Length(16)
        );
        assert_eq!(
            IdNumber::parse_on("51010119900307X238", today()).unwrap_err(),
            Error::Character
        );
        assert_eq!(
            IdNumber::parse_on("51010119900307123Y", today()).unwrap_err(),
            Error::Character
        );
    }

    #[test]
    fn parse_with_system_clock_accepts_past_births() {
        assert!(IdNumber::parse("11010519491231002X").is_ok());
    }
}
