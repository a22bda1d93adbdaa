//! The district directory (R7.2): the 23 district housing/construction
//! bureaus of Attachment 2 with their health liaison officers, read from
//! `workflows/districts.yaml`, and `DistrictCode`, the slug that names a
//! district everywhere else. Owns parsing and checking that file (every field
//! parsed into its domain type, numbers, codes and names unique).
//! Must not: hard-code the districts (the file is data policy staff edit),
//! write the file, or know about accounts or warnings.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::phone::Phone;
use super::text::{NonEmpty, PersonName};

/// Why the directory, or a district code, was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("区（市）县代码“{0}”格式不正确（应为2至32位小写字母、数字或下划线，以字母开头）")]
    Code(String),
    #[error("无法读取区（市）县目录文件 {path}：{source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("区（市）县目录 {origin} 格式有误：{source}")]
    Yaml {
        origin: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("区（市）县目录 {origin} 中没有任何区（市）县")]
    Empty { origin: String },
    #[error("区（市）县目录 {origin} 中{what}“{value}”重复（编号{first}与编号{second}）")]
    Duplicate {
        origin: String,
        what: &'static str,
        value: String,
        first: u16,
        second: u16,
    },
    #[error("区（市）县目录 {origin} 中编号必须大于0")]
    Number { origin: String },
}

/// A district's stable slug, e.g. `jinjiang`: `[a-z][a-z0-9_]{1,31}`.
/// Parsing checks the form only; `Districts::get` tells whether it exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DistrictCode(String);

string_newtype!(DistrictCode, Error);

impl DistrictCode {
    /// Parses a slug (surrounding spaces are ignored, upper case is refused
    /// so that a code has exactly one spelling).
    pub fn parse(input: &str) -> Result<Self, Error> {
        let t = input.trim();
        let b = t.as_bytes();
        let ok = (2..=32).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
        if !ok {
            return Err(Error::Code(t.to_owned()));
        }
        Ok(Self(t.to_owned()))
    }
}

/// One district of the directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct District {
    /// 编号: the row number of Attachment 2 (display order).
    pub number: u16,
    /// Stable slug.
    pub code: DistrictCode,
    /// 区（市）县, e.g. 锦江区.
    pub area: NonEmpty<20>,
    /// 所属单位, e.g. 锦江区住建交局.
    pub name: NonEmpty<50>,
    /// 卫生联络官.
    pub liaison: PersonName,
    /// 联系方式.
    pub phone: Phone,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    districts: Vec<District>,
}

/// The checked directory, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Districts {
    list: Vec<District>,
}

impl Districts {
    /// Reads and checks a directory file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks directory text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let file: File = serde_yaml::from_str(text).map_err(|source| Error::Yaml {
            origin: origin.to_owned(),
            source,
        })?;
        if file.districts.is_empty() {
            return Err(Error::Empty {
                origin: origin.to_owned(),
            });
        }
        let mut numbers = std::collections::HashMap::new();
        let mut seen: [(&'static str, HashSet<&str>); 3] = [
            ("代码", HashSet::new()),
            ("区（市）县", HashSet::new()),
            ("所属单位", HashSet::new()),
        ];
        let dup = |what: &'static str, value: &str, list: &[District], second: u16| {
            let first = list
                .iter()
                .find(|d| match what {
                    "代码" => d.code.as_str() == value,
                    "区（市）县" => d.area.as_str() == value,
                    _ => d.name.as_str() == value,
                })
                .map_or(0, |d| d.number);
            Error::Duplicate {
                origin: origin.to_owned(),
                what,
                value: value.to_owned(),
                first,
                second,
            }
        };
        for d in &file.districts {
            if d.number == 0 {
                return Err(Error::Number {
                    origin: origin.to_owned(),
                });
            }
            if let Some(first) = numbers.insert(d.number, d.number) {
                return Err(Error::Duplicate {
                    origin: origin.to_owned(),
                    what: "编号",
                    value: d.number.to_string(),
                    first,
                    second: d.number,
                });
            }
            let values = [d.code.as_str(), d.area.as_str(), d.name.as_str()];
            for ((what, set), value) in seen.iter_mut().zip(values) {
                if !set.insert(value) {
                    return Err(dup(what, value, &file.districts, d.number));
                }
            }
        }
        Ok(Self {
            list: file.districts,
        })
    }

    /// All districts in file order.
    pub fn all(&self) -> &[District] {
        &self.list
    }

    /// Number of districts.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never true for a parsed directory; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The district with this code.
    pub fn get(&self, code: &DistrictCode) -> Option<&District> {
        self.list.iter().find(|d| &d.code == code)
    }

    /// The district with this code, parsing the text first; `None` if the
    /// text is not a code or no district has it.
    pub fn find(&self, code: &str) -> Option<&District> {
        let code = DistrictCode::parse(code).ok()?;
        self.get(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_file() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/districts.yaml")
    }

    #[test]
    fn real_directory_has_the_23_districts_of_attachment_2() {
        let d = Districts::load(real_file()).unwrap();
        assert_eq!(d.len(), 23);
        let numbers: Vec<u16> = d.all().iter().map(|x| x.number).collect();
        assert_eq!(numbers, (1..=23).collect::<Vec<_>>());
        let first = &d.all()[0];
        assert_eq!(first.code.as_str(), "jinjiang");
        assert_eq!(first.name.as_str(), "锦江区住建交局");
        assert_eq!(first.liaison.as_str(), "黄波");
        assert_eq!(first.phone.as_str(), "84527022");
        let last = d.find("pidu").unwrap();
        assert_eq!(
            (last.number, last.area.as_str(), last.liaison.as_str()),
            (23, "郫都区", "向洪森")
        );
        assert_eq!(
            d.find("gaoxin").unwrap().name.as_str(),
            "高新区公园城市建设局"
        );
        assert!(d.find("chengdu").is_none());
        assert!(d.find("Not A Code").is_none());
    }

    const ONE: &str = "districts:\n  - number: 1\n    code: jinjiang\n    area: 锦江区\n    name: 锦江区住建交局\n    liaison: 黄波\n    phone: \"84527022\"\n";

    #[test]
    fn duplicate_code_is_refused_naming_both_numbers() {
        let text = format!(
            "{ONE}  - number: 2\n    code: jinjiang\n    area: 青羊区\n    name: 青羊区住建交局\n    liaison: 何志励\n    phone: \"62675385\"\n"
        );
        let err = Districts::parse(&text, "t.yaml").unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Duplicate {
                    what: "代码",
                    first: 1,
                    second: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("jinjiang"), "{err}");
    }

    #[test]
    fn duplicate_number_is_refused() {
        let text = format!(
            "{ONE}  - number: 1\n    code: qingyang\n    area: 青羊区\n    name: 青羊区住建交局\n    liaison: 何志励\n    phone: \"62675385\"\n"
        );
        let err = Districts::parse(&text, "t.yaml").unwrap_err();
        assert!(
            matches!(err, Error::Duplicate { what: "编号", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn bad_field_is_refused_with_its_line() {
        let text = ONE.replace("84527022", "8452");
        let err = Districts::parse(&text, "t.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("t.yaml") && msg.contains("line"), "{msg}");
        assert!(msg.contains("联系电话"), "{msg}");
        let text = ONE.replace("code: jinjiang", "code: Jin Jiang");
        assert!(Districts::parse(&text, "t.yaml").is_err());
    }

    #[test]
    fn unknown_field_and_empty_list_are_refused() {
        let text = ONE.replace("    liaison:", "    fax: x\n    liaison:");
        assert!(matches!(
            Districts::parse(&text, "t.yaml"),
            Err(Error::Yaml { .. })
        ));
        assert!(matches!(
            Districts::parse("districts: []\n", "t.yaml"),
            Err(Error::Empty { .. })
        ));
    }

    #[test]
    fn district_code_accepts_slugs_only() {
        assert!(DistrictCode::parse("longquanyi").is_ok());
        assert!(DistrictCode::parse("area_51").is_ok());
        for bad in ["", "j", "Jinjiang", "1abc", "jin-jiang", "锦江"] {
            assert!(DistrictCode::parse(bad).is_err(), "{bad}");
        }
    }
}
