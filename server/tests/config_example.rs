//! deploy/config.example.yaml stays loadable (with its tokens from the
//! environment) and names every variable the configuration reads.

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.example.yaml")
}

#[test]
fn the_example_configuration_loads() {
    let env = |k: &str| matches!(k, "EPI_HEALTH_TOKEN" | "EPI_SMS_TOKEN").then(|| "t".to_string());
    let c = server::config::Config::load(Some(&example()), env).unwrap();
    assert_eq!(c.health.batch_size, 1000);
    assert_eq!(c.engine, server::config::EngineKind::Embedded);
    assert_eq!(c.temporal.task_queue, "epi");
}

#[test]
fn the_example_names_every_environment_variable() {
    let text = std::fs::read_to_string(example()).unwrap();
    let missing: Vec<_> = server::config::env_vars()
        .into_iter()
        .filter(|v| !text.contains(v))
        .collect();
    assert!(missing.is_empty(), "not in the example: {missing:?}");
}
