//! "Why was this person warned?" (issue 12): the operator's page shows, for
//! a flagged person and day, the health data the run judged them on, the
//! definition version and hash it ran, the reasons, and the warning opened
//! with its history and SMS; the person's own district sees the same, other
//! districts and enterprises do not.

#[path = "support/web.rs"]
mod web;

use axum::http::StatusCode;
use web::World;

const START: &str = "2026-12-01T04:59:00+08:00";

on_both_databases!("explain": the_page_shows_the_data_and_rule_that_flagged_a_person);

async fn the_page_shows_the_data_and_rule_that_flagged_a_person(w: World) {
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    let (warning, id_number, reason, district): (String, String, String, String) = sqlx::query_as(
        "SELECT w.id, s.id_number, w.reason, w.district FROM warnings w \
             JOIN staff s ON s.id = w.staff_id ORDER BY w.id LIMIT 1",
    )
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    let hash: String =
        sqlx::query_scalar("SELECT definition_hash FROM instances WHERE kind = 'comparison'")
            .fetch_one(&w.sys.pool)
            .await
            .unwrap();
    let path = format!("/explain?id_number={id_number}&day=2026-12-01");

    let mut op = w.logged_in("operator", "/ops").await;
    op.get("/explain").await.assert_ok();
    let page = op.get(&path).await;
    page.assert_ok();
    for want in [
        "比对所用卫健委数据",
        "健康码",
        reason.as_str(),
        warning.as_str(),
        hash.as_str(),
        "预警生成",
    ] {
        assert!(page.contains(want), "{want} missing from the explanation");
    }
    assert_eq!(
        page.body.matches(id_number.as_str()).count(),
        1,
        "the full ID number only in the form the operator filled; the result shows it masked"
    );

    // Bad input is answered at the field; an unknown day finds nothing.
    let bad = op.get("/explain?id_number=123&day=2026-12-01").await;
    bad.assert_ok();
    assert!(bad.contains("class=\"error\""));
    let none = op
        .get(&format!("/explain?id_number={id_number}&day=2026-11-01"))
        .await;
    assert!(none.contains("id=\"not-found\""));

    // The person's district sees it; another district and an enterprise do not.
    let mut own = w.logged_in(&district, "/district").await;
    assert!(own.get(&path).await.contains(&warning));
    let other_district = if district == "qingyang" {
        "jinjiang"
    } else {
        "qingyang"
    };
    let mut other = w.logged_in(other_district, "/district").await;
    let refused = other.get(&path).await;
    assert!(!refused.contains(&warning));
    assert!(refused.contains("id=\"not-found\""));
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    assert_eq!(e.get(&path).await.status, StatusCode::FORBIDDEN);
    let mut city = w.logged_in("city", "/policy").await;
    assert_eq!(city.get(&path).await.status, StatusCode::FORBIDDEN);
}
