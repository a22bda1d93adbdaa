//! deploy/config.example.yaml stays loadable (with its tokens from the environment).

#[test]
fn the_example_configuration_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.example.yaml");
    let env = |k: &str| matches!(k, "EPI_HEALTH_TOKEN" | "EPI_SMS_TOKEN").then(|| "t".to_string());
    let c = server::config::Config::load(Some(&path), env).unwrap();
    assert_eq!(c.health.batch_size, 1000);
}
