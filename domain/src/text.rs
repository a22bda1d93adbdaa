//! Bounded free text: `NonEmpty<MAX>` (trimmed, 1..=MAX characters, no
//! control characters) with aliases for enterprise names and addresses, and
//! `PersonName`. Lengths count characters, not bytes, so a Chinese name of
//! four characters is four. Must not guess at meaning (no dictionary checks).

/// Why a text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("此项不能为空")]
    Empty,
    #[error("内容不能超过{max}个字（当前{actual}个字）")]
    TooLong { max: usize, actual: usize },
    #[error("内容含有不可见的控制字符")]
    Control,
    #[error("请填写姓名")]
    NameEmpty,
    #[error("姓名不能超过{max}个字（当前{actual}个字）")]
    NameTooLong { max: usize, actual: usize },
    #[error("姓名不能包含数字或控制字符")]
    NameCharacter,
}

fn trimmed(input: &str) -> &str {
    input.trim_matches(|c: char| c.is_whitespace() || c == '\u{3000}')
}

/// Trimmed text of 1 to `MAX` characters without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NonEmpty<const MAX: usize>(String);

impl<const MAX: usize> NonEmpty<MAX> {
    /// Trims and checks the text.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let t = trimmed(input);
        if t.is_empty() {
            return Err(Error::Empty);
        }
        let actual = t.chars().count();
        if actual > MAX {
            return Err(Error::TooLong { max: MAX, actual });
        }
        if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(Error::Control);
        }
        Ok(Self(t.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> AsRef<str> for NonEmpty<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> std::fmt::Display for NonEmpty<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> std::str::FromStr for NonEmpty<MAX> {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl<const MAX: usize> serde::Serialize for NonEmpty<MAX> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> serde::Deserialize<'de> for NonEmpty<MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An enterprise or unit name (企业名称), at most 100 characters.
pub type EnterpriseName = NonEmpty<100>;
/// An address (注册地址, 在蓉办公地址), at most 200 characters.
pub type Address = NonEmpty<200>;

/// A person's name: 1 to 50 characters, no digits or control characters;
/// the middle dot of minority and foreign names (·, •) is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonName(String);

string_newtype!(PersonName, Error);

impl PersonName {
    /// Longest accepted name, in characters.
    pub const MAX: usize = 50;

    /// Trims and checks a name.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let t = trimmed(input);
        if t.is_empty() {
            return Err(Error::NameEmpty);
        }
        let actual = t.chars().count();
        if actual > Self::MAX {
            return Err(Error::NameTooLong {
                max: Self::MAX,
                actual,
            });
        }
        if t.chars()
            .any(|c| c.is_control() || c.is_ascii_digit() || ('\u{FF10}'..='\u{FF19}').contains(&c))
        {
            return Err(Error::NameCharacter);
        }
        Ok(Self(t.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_and_minority_names_are_accepted() {
        for n in ["黄波", "曾琪惠", "阿依古丽·买买提", "John Smith"] {
            assert_eq!(PersonName::parse(n).unwrap().as_str(), n);
        }
        assert_eq!(PersonName::parse("\u{3000}黄波 ").unwrap().as_str(), "黄波");
    }

    #[test]
    fn name_errors_are_in_chinese() {
        assert_eq!(
            PersonName::parse(" ").unwrap_err().to_string(),
            "请填写姓名"
        );
        let long = "李".repeat(51);
        assert_eq!(
            PersonName::parse(&long).unwrap_err(),
            Error::NameTooLong {
                max: 50,
                actual: 51
            }
        );
        assert_eq!(PersonName::parse("张3").unwrap_err(), Error::NameCharacter);
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // 100 Chinese characters are 300 bytes and still fit.
        let name = "建".repeat(100);
        assert!(EnterpriseName::parse(&name).is_ok());
        let err = EnterpriseName::parse(&"建".repeat(101)).unwrap_err();
        assert_eq!(err.to_string(), "内容不能超过100个字（当前101个字）");
    }

    #[test]
    fn empty_and_control_text_is_refused() {
        assert_eq!(Address::parse("  ").unwrap_err(), Error::Empty);
        assert_eq!(Address::parse("a\u{0}b").unwrap_err(), Error::Control);
        assert_eq!(
            NonEmpty::<10>::parse(" 武侯区 ").unwrap().as_str(),
            "武侯区"
        );
    }

    #[test]
    fn deserialize_goes_through_parse() {
        assert!(serde_json::from_str::<NonEmpty<3>>("\"abcd\"").is_err());
        let n: PersonName = serde_json::from_str("\" 黄波\"").unwrap();
        assert_eq!(n.as_ref(), "黄波");
    }
}
