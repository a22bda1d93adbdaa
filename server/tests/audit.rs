//! The access audit (issue 15): a district viewing a warning, an operator
//! asking why a person was warned and an administrator's action each leave
//! a row (who, when, what, from where); an administrator lists them on
//! `/admin/audit`, filtered by account and day; an enterprise (or a
//! district) cannot read the audit. Full ID numbers never enter it.

#[path = "support/web.rs"]
mod web;

use axum::http::StatusCode;
use web::{NowMs, World};

const START: &str = "2026-12-01T04:59:00+08:00";

on_both_databases!("audit": views_of_warnings_are_recorded_and_only_administrators_read_them);

async fn views_of_warnings_are_recorded_and_only_administrators_read_them(w: World) {
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    let (warning, district, id_number): (String, String, String) = sqlx::query_as(
        "SELECT w.id, w.district, s.id_number FROM warnings w JOIN staff s ON s.id = w.staff_id \
         ORDER BY w.id LIMIT 1",
    )
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    let rows = |w: &World| {
        let pool = w.sys.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, String, String, String)>(
                "SELECT username, role, action, target, client FROM access_audit ORDER BY at, id",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert!(rows(&w).await.is_empty());

    // The enterprise looking at its own warning is not an access to record.
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    e.get(&format!("/warnings/{warning}")).await.assert_ok();
    assert!(rows(&w).await.is_empty());

    // The district's list (its home) and its view of the warning each
    // leave a record; the list's names the warnings it showed.
    let mut d = w.logged_in(&district, "/district").await;
    let listed = rows(&w).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].0.as_str(), listed[0].2.as_str()),
        (district.as_str(), "view_warning_list")
    );
    assert!(listed[0].3.split(',').any(|id| id == warning), "{listed:?}");
    d.get(&format!("/warnings/{warning}")).await.assert_ok();
    assert_eq!(
        rows(&w).await[1..],
        [(
            district.clone(),
            "district".into(),
            "view_warning".into(),
            warning.clone(),
            "local".into()
        )]
    );

    // The operator asking why a person was warned: recorded with the ID
    // number masked, never in full.
    let mut op = w.logged_in("operator", "/ops").await;
    op.get(&format!("/explain?id_number={id_number}&day=2026-12-01"))
        .await
        .assert_ok();
    let all = rows(&w).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[2].0, "operator");
    assert_eq!(all[2].2, "explain");
    assert!(!all[2].3.contains(&id_number), "{all:?}");
    assert!(
        all[2].3.contains(&id_number[..3])
            && all[2].3.contains('*')
            && all[2].3.ends_with("2026-12-01"),
        "{all:?}"
    );

    // Neither an enterprise nor a district nor an operator may read the audit.
    for c in [&mut e, &mut d, &mut op] {
        assert_eq!(c.get("/admin/audit").await.status, StatusCode::FORBIDDEN);
    }

    // An administrator lists it, filtered by account and day.
    server::accounts::upsert_account(
        &w.sys.pool,
        "root",
        &server::accounts::Role::Admin,
        None,
        "Adm1nPassw0rd",
        false,
        w.clock.now_ms(),
    )
    .await
    .unwrap();
    let mut admin = w.client();
    admin.login("root", "Adm1nPassw0rd", "/admin").await;
    let page = admin.get("/admin/audit").await;
    page.assert_ok();
    assert!(page.contains("view_warning") && page.contains(&warning));
    assert!(page.contains("explain") && !page.contains(&id_number));
    let only = admin
        .get(&format!("/admin/audit?account={district}&day=2026-12-01"))
        .await;
    only.assert_ok();
    assert!(only.contains("view_warning") && !only.contains(">explain<"));
    let other_day = admin
        .get(&format!("/admin/audit?account={district}&day=2026-12-02"))
        .await;
    assert!(other_day.contains("没有符合条件的记录"));
    let bad = admin.get("/admin/audit?day=tomorrow").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.contains("日期格式"));

    // An administrator's action is recorded too.
    admin
        .post("/admin/accounts/disable", &[("username", "city")])
        .await;
    let all = rows(&w).await;
    assert!(
        all.iter()
            .any(|r| r.0 == "root" && r.2 == "admin_disable_account" && r.3 == "city"),
        "{all:?}"
    );
}
