//! `EnterpriseType`: the eight kinds of construction-industry enterprise the
//! module serves (DOMAIN.md, "Who uses it"), with their Chinese labels.
//! Serialised as a stable ASCII code; parsed from the code or the label.
//! Must not carry per-type behaviour: rules and forms decide that.

/// Why a text is not an enterprise type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("请选择企业类型")]
    Empty,
    #[error(
        "企业类型“{0}”不在可选范围内（施工、监理、勘察、设计、商混、造价咨询、招标代理、装饰装修）"
    )]
    Unknown(String),
}

/// A construction-industry enterprise type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnterpriseType {
    /// 施工企业
    Construction,
    /// 监理企业
    Supervision,
    /// 勘察企业
    Survey,
    /// 设计企业
    Design,
    /// 商混企业（及商混站）
    ReadyMixedConcrete,
    /// 造价咨询企业
    CostConsulting,
    /// 招标代理机构
    TenderingAgency,
    /// 装饰装修企业
    Decoration,
}

impl EnterpriseType {
    /// All types, in the order the guide lists them (the form's option order).
    pub const ALL: [EnterpriseType; 8] = [
        Self::Construction,
        Self::Supervision,
        Self::Survey,
        Self::Design,
        Self::ReadyMixedConcrete,
        Self::CostConsulting,
        Self::TenderingAgency,
        Self::Decoration,
    ];

    /// The stable ASCII code used in storage and JSON.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Construction => "construction",
            Self::Supervision => "supervision",
            Self::Survey => "survey",
            Self::Design => "design",
            Self::ReadyMixedConcrete => "ready_mixed_concrete",
            Self::CostConsulting => "cost_consulting",
            Self::TenderingAgency => "tendering_agency",
            Self::Decoration => "decoration",
        }
    }

    /// The Chinese label shown in the UI.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Construction => "施工企业",
            Self::Supervision => "监理企业",
            Self::Survey => "勘察企业",
            Self::Design => "设计企业",
            Self::ReadyMixedConcrete => "商混企业（及商混站）",
            Self::CostConsulting => "造价咨询企业",
            Self::TenderingAgency => "招标代理机构",
            Self::Decoration => "装饰装修企业",
        }
    }

    /// Parses a code (`construction`) or a Chinese label (`施工企业`, also
    /// `商混企业` and `商混站`).
    pub fn parse(input: &str) -> Result<Self, Error> {
        let t = input.trim();
        if t.is_empty() {
            return Err(Error::Empty);
        }
        if let Some(found) = Self::ALL
            .into_iter()
            .find(|k| k.code().eq_ignore_ascii_case(t) || k.label() == t)
        {
            return Ok(found);
        }
        match t {
            "商混企业" | "商混站" | "商混企业(及商混站)" => {
                Ok(Self::ReadyMixedConcrete)
            }
            _ => Err(Error::Unknown(t.to_owned())),
        }
    }
}

impl AsRef<str> for EnterpriseType {
    /// The ASCII code.
    fn as_ref(&self) -> &str {
        self.code()
    }
}

impl std::fmt::Display for EnterpriseType {
    /// The Chinese label (what a person reads); use `code()` for storage.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl std::str::FromStr for EnterpriseType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl serde::Serialize for EnterpriseType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for EnterpriseType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_from_its_code_and_its_label() {
        for k in EnterpriseType::ALL {
            assert_eq!(EnterpriseType::parse(k.code()).unwrap(), k);
            assert_eq!(EnterpriseType::parse(k.label()).unwrap(), k);
            assert_eq!(k.to_string(), k.label());
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.code()));
            assert_eq!(serde_json::from_str::<EnterpriseType>(&json).unwrap(), k);
        }
    }

    #[test]
    fn short_forms_of_ready_mixed_concrete_are_accepted() {
        for t in ["商混企业", "商混站"] {
            assert_eq!(
                EnterpriseType::parse(t).unwrap(),
                EnterpriseType::ReadyMixedConcrete
            );
        }
    }

    #[test]
    fn unknown_type_is_refused_naming_the_input() {
        let err = EnterpriseType::parse("房地产开发企业").unwrap_err();
        assert!(err.to_string().contains("房地产开发企业"), "{err}");
        assert_eq!(EnterpriseType::parse(" ").unwrap_err(), Error::Empty);
    }
}
