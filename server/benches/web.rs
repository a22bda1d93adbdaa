//! Load on the web forms: the logged-in enterprise's home page and warning
//! list, with 10,000 staff and 1,000 warnings, on the embedded default
//! (SQLite file), measured with wrk over loopback (bounded: 2 threads, 32
//! connections, 10 s per page). Prints req/s and latency percentiles.
//!
//!   cargo bench -p server --bench web          (full size)
//!
//! Under `cargo test` it runs a smoke size (200 staff, 50 warnings, 1 s).
//! Target (issue 5): at least 3,000 requests/s with p99 under 50 ms.

use engine::store::sql::{insert_many, Arg};
use server::system::{ClockChoice, Paths, System};
use std::process::Command;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn ensure_wrk() -> bool {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return true;
    }
    eprintln!("installing wrk (Debian package)...");
    let ok = Command::new("sh")
        .arg("-c")
        .arg("apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok && Command::new("wrk").arg("--version").output().is_ok()
}

/// `"1.23ms"`, `"850.00us"`, `"1.02s"` → milliseconds.
fn ms(s: &str) -> f64 {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

/// The `name=value` of the answer's first Set-Cookie.
fn first_cookie(r: &reqwest::Response) -> String {
    r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (staff, warnings, secs) = if full {
        (10_000u32, 1_000u32, 10)
    } else {
        (200, 50, 1)
    };
    // EPI_BENCH_SECS shortens or lengthens each wrk run while iterating.
    let secs: u32 = std::env::var("EPI_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(secs);
    let dir = std::env::temp_dir().join(format!("epi-web-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = server::config::Config {
        database_url: format!("sqlite://{}/web.db?mode=rwc", dir.display()),
        ..Default::default()
    };
    let sys = System::open(
        &config,
        &Paths::repository(),
        ClockChoice::System,
        engine::runtime::Options::default(),
    )
    .await
    .unwrap();
    let now = sys.clock.now().timestamp_millis();
    let creds = server::demo::seed(&sys.pool, &sys.districts, now)
        .await
        .unwrap();
    let password = creds
        .iter()
        .find(|c| c.username == server::demo::ENTERPRISE_USER)
        .unwrap()
        .password
        .clone();
    // Staff beyond the demo's 60 and warnings in every state.
    let mut tx = sys.pool.begin().await.unwrap();
    let rows: Vec<Vec<Arg>> = (server::demo::STAFF..staff)
        .map(|n| {
            let t = |s: String| Arg::T(Some(s));
            vec![
                t(format!("bench-staff-{n}")),
                t(server::demo::ENTERPRISE_ID.into()),
                t(if n % 2 == 0 {
                    "demo-addr-1"
                } else {
                    "demo-addr-2"
                }
                .into()),
                t(format!("人员{n}")),
                t(format!("B{n:017}")),
                Arg::I(Some(now)),
                Arg::I(Some(now)),
            ]
        })
        .collect();
    for chunk in rows.chunks(2000) {
        insert_many(
            &mut tx,
            "staff",
            "id, enterprise_id, address_id, name, id_number, created_at, updated_at",
            chunk.to_vec(),
            "",
        )
        .await
        .unwrap();
    }
    let states = ["awaiting_disposal", "under_review", "rectifying", "closed"];
    let rows: Vec<Vec<Arg>> = (0..warnings)
        .map(|n| {
            let t = |s: String| Arg::T(Some(s));
            let state = states[(n % 4) as usize];
            vec![
                t(format!("bench-w-{n}")),
                t(server::demo::ENTERPRISE_ID.into()),
                t(server::demo::DISTRICT.into()),
                t(format!("bench-staff-{}", server::demo::STAFF + n)),
                t(format!("人员{n}")),
                t("5101**********0000".into()),
                t("红码".into()),
                t(format!("bench-{n}")),
                t(state.into()),
                Arg::I(Some(i64::from(n % 7 == 0))),
                Arg::I(Some(0)),
                Arg::I(Some(now - i64::from(n) * 60_000)),
                Arg::I(Some(now)),
                Arg::I((state == "closed").then_some(now)),
            ]
        })
        .collect();
    for chunk in rows.chunks(1000) {
        insert_many(
            &mut tx,
            "warnings",
            "id, enterprise_id, district, staff_id, person_name, person_masked, reason, dedupe_key, state, \
             disposal_overdue, review_overdue, opened_at, updated_at, closed_at",
            chunk.to_vec(),
            "",
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    // Written around the projection's functions: count them once.
    server::warnings::rebuild_counts(&sys.pool).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::web::serve(
        listener,
        server::web::app(sys.clone(), Default::default()),
    ));

    // Log in as the enterprise, by hand (no cookie store).
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(format!("{base}/login")).send().await.unwrap();
    let anon = first_cookie(&r);
    let token = anon.split('=').nth(1).unwrap().to_string();
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", &anon)
        .form(&[
            ("_csrf", token.as_str()),
            ("username", server::demo::ENTERPRISE_USER),
            ("password", password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login");
    let session = first_cookie(&r);
    let cookie = format!("{session}; {anon}");
    let pages = [
        ("/home", "预警处置"),
        ("/warnings", "待处置"),
        ("/warnings?page=20", "待处置"),
    ];
    for (path, text) in pages {
        let r = http
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.text().await.unwrap().contains(text),
            "{path} lacks {text}"
        );
    }
    println!(
        "web load: {staff} staff, {warnings} warnings, SQLite file, wrk -t2 -c32 -d{secs}s over loopback"
    );
    if !ensure_wrk() {
        assert!(
            !full,
            "wrk is required for the full benchmark (Debian package wrk)"
        );
        println!("wrk not available: smoke run checked the pages only");
        return;
    }
    let mut all_met = true;
    // EPI_BENCH_ONLY=/warnings loads one page (to profile it alone).
    let only = std::env::var("EPI_BENCH_ONLY").ok();
    for (path, _) in pages {
        if only.as_deref().is_some_and(|o| o != path) {
            continue;
        }
        let out = tokio::task::spawn_blocking({
            let url = format!("{base}{path}");
            let cookie = cookie.clone();
            move || {
                Command::new("wrk")
                    .args(["-t2", "-c32", &format!("-d{secs}s"), "--latency", "-H"])
                    .arg(format!("Cookie: {cookie}"))
                    .arg(url)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let field = |prefix: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(prefix))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("")
                .to_string()
        };
        let rps: f64 = field("Requests/sec:").parse().unwrap_or(0.0);
        let (p50, p99) = (ms(&field("50%")), ms(&field("99%")));
        let non2xx = field("Non-2xx");
        let met = rps >= 3000.0 && p99 < 50.0 && non2xx.is_empty();
        all_met &= met;
        println!(
            "  GET {path:<20} {rps:>9.0} req/s   p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   non-2xx {}   target {}",
            if non2xx.is_empty() { "0".to_string() } else { text.lines().find(|l| l.contains("Non-2xx")).unwrap_or("").trim().to_string() },
            match (full, met) {
                (false, _) => "not judged (smoke size)",
                (true, true) => "met",
                (true, false) => "NOT met",
            }
        );
        assert!(non2xx.is_empty(), "non-2xx responses under load:\n{text}");
    }
    if full {
        println!(
            "targets (≥3,000 req/s, p99 < 50 ms): {}",
            if all_met { "met" } else { "NOT met" }
        );
    }
    if std::env::var_os("EPI_BENCH_KEEP").is_some() {
        println!("database kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
