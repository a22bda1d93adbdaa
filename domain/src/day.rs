//! Days as Chengdu counts them: a daily record, a comparison run's figures
//! and the pages' "today" are all the local day in Asia/Shanghai.

use chrono::{DateTime, Utc};

/// The local day (`YYYY-MM-DD`) in Chengdu of an instant.
pub fn day_of(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_turns_at_midnight_in_chengdu_not_in_utc() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(day_of(t("2026-12-01T15:59:59Z")), "2026-12-01");
        assert_eq!(day_of(t("2026-12-01T16:00:00Z")), "2026-12-02");
    }
}
