//! Domain values of the epidemic-prevention module, built only by parsing.
//!
//! Owns: the newtypes that carry a checked value (credit code, ID number,
//! mobile, enterprise type, names and bounded text, district codes) and the
//! district directory loaded from `workflows/districts.yaml`. Every type here
//! is constructed through `parse` (or serde, which goes through `parse`), so a
//! value of the type is proof that the input was checked. Each module has its
//! own `Error` whose message is Chinese and meant for the person who typed the
//! value.
//!
//! Must not: do I/O other than reading the district file it is pointed at,
//! depend on `engine` types, or know about HTTP, storage or adapters.

#[macro_use]
mod macros;

pub mod credit_code;
pub mod day;
pub mod districts;
pub mod enterprise_type;
pub mod id_number;
pub mod mobile;
pub mod normalize;
pub mod phone;
pub mod text;

pub use credit_code::CreditCode;
pub use day::day_of;
pub use districts::{District, DistrictCode, Districts};
pub use enterprise_type::EnterpriseType;
pub use id_number::IdNumber;
pub use mobile::Mobile;
pub use phone::Phone;
pub use text::{Address, EnterpriseName, NonEmpty, PersonName};
