//! `anomaly::evaluate` per person, as the comparison run calls it (200,000
//! persons, three rounds): `cargo run --release -p engine --example rule_evaluate_speed`.
use engine::rules::rhai;
fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (w, r) = engine::load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
    let b = engine::compile_bundle(&w, &r, &engine::Options::default()).unwrap();
    let mk = |i: usize| {
        let mut rep = rhai::Map::new();
        rep.insert("sampled_at".into(), "2026-11-29T08:00:00+00:00".into());
        rep.insert(
            "result".into(),
            if i % 500 == 0 { "positive" } else { "negative" }.into(),
        );
        let mut v = rhai::Map::new();
        v.insert("doses".into(), rhai::Dynamic::from_int(3));
        v.insert("completed".into(), true.into());
        let mut p = rhai::Map::new();
        p.insert(
            "nat_reports".into(),
            rhai::Dynamic::from_array(vec![rep.into()]),
        );
        p.insert("vaccination".into(), v.into());
        p.insert(
            "health_code".into(),
            if i % 300 == 0 { "red" } else { "green" }.into(),
        );
        rhai::Dynamic::from_map(p)
    };
    let persons: Vec<_> = (0..200_000).map(mk).collect();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let mut n = 0;
        for p in &persons {
            let d = b
                .rules
                .call_dynamic("anomaly", "evaluate", vec![p.clone()])
                .unwrap();
            n += d.into_array().unwrap().len();
        }
        println!(
            "{:?} per person ({n} reasons)",
            t.elapsed() / persons.len() as u32
        );
    }
}
