//! deploy/: what can be checked without a Docker engine or a cluster. Every
//! YAML file parses; every `EPI_*` variable the compose file, the Kubernetes
//! manifests and the Dockerfile set is one the server's configuration reads;
//! every container runs a subcommand the binary has; the image's entrypoint
//! is the binary the builder stage builds; COPY sources exist; workloads
//! have probes on routes the server serves, resources and a non-root user;
//! the Temporal namespace's set-up matches the configuration and keeps
//! histories as long as workflows/retention.yaml keeps closed warnings.

use serde::Deserialize as _;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The image deploy/Dockerfile builds, as compose and the manifests name it.
const IMAGE: &str = "epi-server";

/// The processes agreed for deployment (common notes).
const AGREED_SUBCOMMANDS: &[&str] = &["serve", "worker", "migrate"];

/// The custom search attributes (Keyword) the operator's search filters on.
const SEARCH_ATTRIBUTES: &[&str] = &[
    "EpiWorkflow",
    "EpiEnterprise",
    "EpiDistrict",
    "EpiPerson",
    "EpiState",
    "EpiStatus",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if keep(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Every document of a YAML file, merge keys (`<<:`) applied as compose
/// applies them; empty documents dropped.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    docs.remove(0)
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn keys(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The environment variables the server's configuration reads: its own
/// list (`config::env_vars()`, the table every setting is read through).
fn config_variables() -> BTreeSet<String> {
    server::config::env_vars()
        .into_iter()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// The Dockerfile.

struct Instruction {
    keyword: String,
    args: String,
}

struct Stage {
    image: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

/// Instructions by stage (continuation lines joined, comments dropped), and
/// the global ARGs before the first FROM.
fn dockerfile() -> (Vec<Instruction>, Vec<Stage>) {
    let text = read(&deploy().join("Dockerfile"));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "Dockerfile ends inside a continued line"
    );
    let (mut globals, mut stages) = (Vec::new(), Vec::<Stage>::new());
    for l in logical.iter().filter(|l| !l.trim().is_empty()) {
        let (keyword, args) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let ins = Instruction {
            keyword: keyword.to_uppercase(),
            args: args.trim().to_string(),
        };
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                other => panic!("FROM {other:?}"),
            };
            stages.push(Stage {
                image: words[0].to_string(),
                name,
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(ins);
        } else {
            globals.push(ins);
        }
    }
    (globals, stages)
}

/// An exec-form array (`["a", "b"]`), as JSON.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("`{args}` is not an exec-form array ({e}): use [\"…\"]"))
}

/// The final stage's ENTRYPOINT + CMD split into the binary and its command.
fn image_command() -> (String, Vec<String>) {
    let (_, stages) = dockerfile();
    let last = stages.last().expect("a FROM");
    let one = |k: &str| -> Vec<String> {
        let found: Vec<_> = last.body.iter().filter(|i| i.keyword == k).collect();
        assert_eq!(found.len(), 1, "the final stage has one {k}");
        exec_form(&found[0].args)
    };
    let entrypoint = one("ENTRYPOINT");
    assert_eq!(entrypoint.len(), 1, "ENTRYPOINT is the binary alone");
    (entrypoint[0].clone(), one("CMD"))
}

#[test]
fn the_image_entrypoint_is_the_binary_the_builder_builds() {
    let (globals, stages) = dockerfile();
    assert!(stages.len() >= 2, "a builder stage and a runtime stage");
    // The builder: `cargo build --release -p server --features ${FEATURES}`,
    // FEATURES defaulting to `temporal`, then the binary put somewhere.
    let (builder, build) = stages
        .iter()
        .find_map(|s| {
            s.body
                .iter()
                .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
                .map(|i| (s, i))
        })
        .expect("a stage runs cargo build");
    let builder_name = builder.name.as_deref().expect("the builder stage is named");
    for part in ["--release", "-p server", "--features \"${FEATURES}\""] {
        assert!(
            build.args.contains(part),
            "cargo build lacks `{part}`: {}",
            build.args
        );
    }
    assert!(
        builder
            .body
            .iter()
            .any(|i| i.keyword == "ARG" && i.args == "FEATURES=temporal"),
        "the builder declares ARG FEATURES=temporal"
    );
    assert!(
        builder
            .body
            .iter()
            .any(|i| i.keyword == "RUN" && i.args.contains("protobuf-compiler")),
        "the builder installs protoc (Debian protobuf-compiler)"
    );
    // The binary cargo builds is the one the tests run.
    let bin = Path::new(env!("CARGO_BIN_EXE_server"))
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let built = format!("target/release/{bin}");
    let words: Vec<&str> = build.args.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == built)
        .unwrap_or_else(|| panic!("the build step does not take {built}: {}", build.args));
    let staged = *words.get(at + 1).expect("where the binary is put");
    // The runtime stage: the binary copied from the builder, as ENTRYPOINT.
    let runtime = stages.last().unwrap();
    assert_ne!(
        runtime.name.as_deref(),
        Some(builder_name),
        "a separate runtime stage"
    );
    assert!(
        runtime.image.contains("slim") || runtime.image.contains("distroless"),
        "a small runtime image, not {}",
        runtime.image
    );
    let copied: Vec<&str> = runtime
        .body
        .iter()
        .filter(|i| i.keyword == "COPY" && i.args.starts_with(&format!("--from={builder_name} ")))
        .map(|i| i.args.as_str())
        .collect();
    let dest = copied
        .iter()
        .find_map(|a| {
            let w: Vec<&str> = a.split_whitespace().collect();
            (w.len() == 3 && w[1] == staged).then(|| w[2].to_string())
        })
        .unwrap_or_else(|| {
            panic!("the runtime stage copies {staged} from {builder_name}: {copied:?}")
        });
    let (entrypoint, cmd) = image_command();
    assert_eq!(
        entrypoint, dest,
        "ENTRYPOINT is the binary copied from the builder"
    );
    assert_eq!(cmd, ["serve"], "default CMD");
    // Non-root, no HEALTHCHECK (the orchestrators probe).
    let user = runtime
        .body
        .iter()
        .rfind(|i| i.keyword == "USER")
        .map(|i| i.args.clone())
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(!matches!(uid, "0" | "root"), "USER {user} is root");
    for s in &stages {
        assert!(
            s.body.iter().all(|i| i.keyword != "HEALTHCHECK"),
            "no HEALTHCHECK: compose and Kubernetes probe /healthz"
        );
    }
    assert!(
        globals.iter().all(|i| i.keyword == "ARG"),
        "only ARGs before FROM"
    );
}

#[test]
fn the_files_the_dockerfile_copies_exist_and_are_in_the_build_context() {
    let (_, stages) = dockerfile();
    let ignored: Vec<String> = read(&root().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    let mut sources = Vec::new();
    for s in &stages {
        for i in s
            .body
            .iter()
            .filter(|i| matches!(i.keyword.as_str(), "COPY" | "ADD"))
        {
            if i.args.starts_with("--from=") {
                continue;
            }
            let words: Vec<&str> = i
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            assert!(words.len() >= 2, "COPY {}", i.args);
            sources.extend(words[..words.len() - 1].iter().map(|w| w.to_string()));
        }
    }
    assert!(!sources.is_empty());
    for src in &sources {
        let path = root().join(src);
        assert!(
            path.exists(),
            "COPY {src}: not in the repository ({})",
            path.display()
        );
        let first = src.trim_start_matches("./").split('/').next().unwrap();
        assert!(
            !ignored.iter().any(|p| p == first),
            "COPY {src}: excluded by .dockerignore"
        );
    }
    // The build context keeps target/ out.
    assert!(
        ignored.iter().any(|p| p == "target"),
        ".dockerignore: target/"
    );
    // What `server serve` and `server worker` read at run time from their
    // working directory (`--workflows`, `--rules` default to ./workflows and
    // ./rules): in the image, beside the WORKDIR.
    let runtime = stages.last().unwrap();
    let workdir = runtime
        .body
        .iter()
        .rfind(|i| i.keyword == "WORKDIR")
        .map(|i| i.args.trim_end_matches('/').to_string())
        .expect("WORKDIR");
    for dir in ["workflows", "rules"] {
        let want = format!("{workdir}/{dir}");
        assert!(
            runtime.body.iter().any(|i| {
                let w: Vec<&str> = i.args.split_whitespace().collect();
                i.keyword == "COPY"
                    && w.len() == 2
                    && w[0].trim_end_matches('/') == dir
                    && w[1].trim_end_matches('/') == want
            }),
            "the runtime stage copies {dir}/ to {want}/"
        );
    }
}

// ---------------------------------------------------------------------------
// Compose and Kubernetes.

fn compose() -> Value {
    yaml(&deploy().join("compose.yaml"))
}

fn services(c: &Value) -> Vec<(String, &Value)> {
    c.get("services")
        .and_then(Value::as_mapping)
        .expect("compose: services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v))
        .collect()
}

fn is_ours(image: Option<&str>) -> bool {
    image.is_some_and(|i| i.contains(IMAGE))
}

/// A compose service's environment as name → value (map or `K=V` list).
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().unwrap().to_string(), v)
            })
            .collect(),
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|e| {
                let e = e.as_str().unwrap();
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(other) => panic!("environment: {other:?}"),
    }
}

/// A compose command as words.
fn compose_command(service: &Value) -> Option<Vec<String>> {
    match service.get("command")? {
        Value::String(s) => Some(s.split_whitespace().map(str::to_string).collect()),
        Value::Sequence(s) => Some(s.iter().map(|w| w.as_str().unwrap().to_string()).collect()),
        other => panic!("command: {other:?}"),
    }
}

/// The manifests of deploy/k8s (every document of every file but the
/// kustomization), with the file each came from.
fn manifests() -> Vec<(PathBuf, Value)> {
    let dir = deploy().join("k8s");
    files(&dir, &|p| is_yaml(p) && !p.ends_with("kustomization.yaml"))
        .into_iter()
        .flat_map(|f| yaml_docs(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn kind(doc: &Value) -> &str {
    str_of(doc, &["kind"]).unwrap_or("")
}

fn name(doc: &Value) -> &str {
    str_of(doc, &["metadata", "name"]).unwrap_or("")
}

/// Deployments and Jobs: (kind/name, pod spec).
fn workloads(docs: &[(PathBuf, Value)]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|(_, d)| matches!(kind(d), "Deployment" | "Job" | "StatefulSet" | "DaemonSet"))
        .map(|(_, d)| {
            (
                format!("{}/{}", kind(d), name(d)),
                get(d, &["spec", "template", "spec"]).expect("pod spec"),
            )
        })
        .collect()
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    seq(pod, &["containers"])
        .iter()
        .chain(seq(pod, &["initContainers"]))
}

/// Keys of the ConfigMaps and Secrets defined in deploy/k8s, by kind/name.
fn env_sources(docs: &[(PathBuf, Value)]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (_, d) in docs {
        match kind(d) {
            "ConfigMap" => {
                out.insert(format!("ConfigMap/{}", name(d)), keys(d.get("data")));
            }
            "Secret" => {
                let mut k = keys(d.get("data"));
                k.extend(keys(d.get("stringData")));
                out.insert(format!("Secret/{}", name(d)), k);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let all = files(&deploy(), &|p| is_yaml(p));
    let names: Vec<String> = all
        .iter()
        .map(|p| p.strip_prefix(deploy()).unwrap().display().to_string())
        .collect();
    for want in [
        "compose.yaml",
        "config.example.yaml",
        "k8s/kustomization.yaml",
        "temporal/helm-values.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "deploy/{want} missing: {names:?}"
        );
    }
    let mut documents = 0;
    for f in &all {
        documents += yaml_docs(f).len();
    }
    // Every Kubernetes document is a typed object.
    for (f, d) in manifests() {
        assert!(
            str_of(&d, &["apiVersion"]).is_some() && !kind(&d).is_empty() && !name(&d).is_empty(),
            "{}: a document without apiVersion, kind or metadata.name",
            f.display()
        );
    }
    assert!(
        documents > all.len(),
        "the k8s files hold several documents"
    );
}

#[test]
fn every_epi_variable_the_deployment_sets_is_one_the_config_reads() {
    let known = config_variables();
    let mut set: Vec<(String, String)> = Vec::new();
    // compose: every service's environment (the anchors merged in).
    let c = compose();
    for (svc, s) in services(&c) {
        for k in compose_env(s).into_keys().filter(|k| k.starts_with("EPI_")) {
            set.push((format!("compose.yaml service {svc}"), k));
        }
    }
    // Kubernetes: containers' env, and every key of the ConfigMaps and
    // Secrets they take whole (envFrom).
    let docs = manifests();
    let sources = env_sources(&docs);
    for (w, pod) in workloads(&docs) {
        for ctr in containers(pod) {
            for e in seq(ctr, &["env"]) {
                let k = str_of(e, &["name"]).unwrap().to_string();
                if k.starts_with("EPI_") {
                    set.push((format!("k8s {w} env"), k));
                }
            }
            for from in seq(ctr, &["envFrom"]) {
                let source = if let Some(n) = str_of(from, &["configMapRef", "name"]) {
                    format!("ConfigMap/{n}")
                } else if let Some(n) = str_of(from, &["secretRef", "name"]) {
                    format!("Secret/{n}")
                } else {
                    panic!("{w}: envFrom {from:?}")
                };
                let ks = sources
                    .get(&source)
                    .unwrap_or_else(|| panic!("{w} takes {source}, not defined in deploy/k8s"));
                set.extend(
                    ks.iter()
                        .map(|k| (format!("k8s {source} (envFrom {w})"), k.clone())),
                );
            }
        }
    }
    // Kubernetes would add docker-link variables for every Service of the
    // namespace to every pod (Service epi-web: EPI_WEB_SERVICE_HOST,
    // EPI_WEB_PORT, …): variables the configuration does not read.
    let services: Vec<&str> = docs
        .iter()
        .filter(|(_, d)| kind(d) == "Service")
        .map(|(_, d)| name(d))
        .collect();
    for (w, pod) in workloads(&docs) {
        if !containers(pod).any(|c| is_ours(str_of(c, &["image"]))) {
            continue;
        }
        let links = pod.get("enableServiceLinks").and_then(Value::as_bool);
        for svc in &services {
            let injected = format!("{}_SERVICE_HOST", svc.to_uppercase().replace('-', "_"));
            assert!(
                links == Some(false) || !injected.starts_with("EPI_"),
                "{w}: Kubernetes would inject {injected} (Service {svc}): set enableServiceLinks: false"
            );
        }
    }
    // The Dockerfile's ENV.
    let (_, stages) = dockerfile();
    for s in &stages {
        for i in s.body.iter().filter(|i| i.keyword == "ENV") {
            for word in i.args.split_whitespace() {
                let k = word.split('=').next().unwrap();
                if k.starts_with("EPI_") {
                    set.push(("Dockerfile ENV".into(), k.to_string()));
                }
            }
        }
    }
    let unknown: Vec<String> = set
        .iter()
        .filter(|(_, k)| !known.contains(k))
        .map(|(at, k)| format!("{k} ({at})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "variables the configuration does not read: {unknown:?}\nit reads: {known:?}"
    );
    // Both deployments run on Temporal, with the database set.
    for place in ["compose.yaml", "k8s"] {
        for must in ["EPI_ENGINE", "EPI_TEMPORAL_ADDRESS", "EPI_DATABASE_URL"] {
            assert!(
                set.iter().any(|(at, k)| at.starts_with(place) && k == must),
                "{place} does not set {must}"
            );
        }
    }
}

#[test]
fn secrets_are_in_the_secret_and_settings_in_the_configmap() {
    let docs = manifests();
    for (source, ks) in env_sources(&docs) {
        for k in ks {
            let secret = k.ends_with("_TOKEN") || k == "EPI_DATABASE_URL";
            if source.starts_with("ConfigMap/") {
                assert!(!secret, "{k} is a secret but sits in {source}");
            } else {
                assert!(
                    secret,
                    "{k} is not a secret but sits in {source}: use the ConfigMap"
                );
            }
        }
    }
}

/// Subcommands `server --help` lists.
fn binary_subcommands() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--help")
        .output()
        .expect("server --help runs");
    assert!(out.status.success(), "server --help: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let section = text
        .split("Commands:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Commands: section in\n{text}"));
    section
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_container_command_is_a_subcommand_of_the_binary() {
    let (entrypoint, cmd) = image_command();
    let mut used: Vec<(String, String)> = vec![("Dockerfile CMD".into(), cmd[0].clone())];
    let c = compose();
    for (svc, s) in services(&c) {
        if is_ours(str_of(s, &["image"])) {
            let words = compose_command(s).unwrap_or_else(|| cmd.clone());
            used.push((format!("compose.yaml service {svc}"), words[0].clone()));
        }
    }
    let docs = manifests();
    for (w, pod) in workloads(&docs) {
        for ctr in containers(pod).filter(|c| is_ours(str_of(c, &["image"]))) {
            let words = |key: &str| -> Vec<String> {
                seq(ctr, &[key])
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            let (command, args) = (words("command"), words("args"));
            let first = match command.split_first() {
                // `command` replaces the ENTRYPOINT: it must still be the binary.
                Some((bin, rest)) => {
                    assert_eq!(bin, &entrypoint, "{w}: command runs another program");
                    rest.first().or(args.first()).cloned()
                }
                None => args.first().cloned().or(cmd.first().cloned()),
            };
            used.push((format!("k8s {w}"), first.expect("a subcommand")));
        }
    }
    for agreed in AGREED_SUBCOMMANDS {
        assert!(
            used.iter().any(|(_, c)| c == agreed),
            "no container runs `server {agreed}`: {used:?}"
        );
    }
    let listed = binary_subcommands();
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (at, c) in &used {
        if !listed.contains(c) {
            missing.entry(c).or_default().push(at);
        }
    }
    assert!(
        missing.is_empty(),
        "subcommands the deployment runs that `server --help` does not list: {:?} \
         (run by {missing:?}; the binary has {listed:?}). `server worker` and `server migrate` \
         are wired by the integrator (common notes); until then this fails for those two.",
        missing.keys().collect::<Vec<_>>()
    );
}

/// Paths the server routes (`.route("/path"` in server/src/web).
fn served_paths() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files(&root().join("server/src/web"), &|p| {
        p.extension().is_some_and(|e| e == "rs")
    }) {
        let text = read(&f);
        for part in text.split(".route(\"").skip(1) {
            out.insert(part.split('"').next().unwrap().to_string());
        }
    }
    out
}

#[test]
fn workloads_have_probes_on_served_routes_resources_and_a_non_root_user() {
    let served = served_paths();
    assert!(served.contains("/healthz"), "{served:?}");
    let docs = manifests();
    let ws = workloads(&docs);
    assert!(
        ws.iter()
            .filter(|(w, _)| w.starts_with("Deployment/"))
            .count()
            >= 2,
        "web and worker Deployments: {:?}",
        ws.iter().map(|(w, _)| w).collect::<Vec<_>>()
    );
    for (w, pod) in &ws {
        let pod_sc = pod.get("securityContext");
        for ctr in containers(pod) {
            let at = format!("{w} container {}", str_of(ctr, &["name"]).unwrap_or("?"));
            for (section, key) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "cpu"),
                ("limits", "memory"),
            ] {
                assert!(
                    get(ctr, &["resources", section, key]).is_some(),
                    "{at}: resources.{section}.{key}"
                );
            }
            // Non-root: runAsNonRoot on the container or the pod, and no
            // runAsUser 0 on either.
            let sc = ctr.get("securityContext");
            let flag = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).cloned();
            let non_root = flag(sc, "runAsNonRoot")
                .or(flag(pod_sc, "runAsNonRoot"))
                .and_then(|v| v.as_bool());
            assert_eq!(non_root, Some(true), "{at}: runAsNonRoot");
            let uid = flag(sc, "runAsUser")
                .or(flag(pod_sc, "runAsUser"))
                .and_then(|v| v.as_u64());
            assert_ne!(uid, Some(0), "{at}: runAsUser 0");
            assert_eq!(
                flag(sc, "allowPrivilegeEscalation").and_then(|v| v.as_bool()),
                Some(false),
                "{at}: allowPrivilegeEscalation: false"
            );
            if !w.starts_with("Deployment/") {
                continue;
            }
            let ports: Vec<Value> = seq(ctr, &["ports"])
                .iter()
                .flat_map(|p| [p.get("name").cloned(), p.get("containerPort").cloned()])
                .flatten()
                .collect();
            for probe in ["readinessProbe", "livenessProbe"] {
                let p = get(ctr, &[probe]).unwrap_or_else(|| panic!("{at}: {probe}"));
                if let Some(http) = p.get("httpGet") {
                    let path = str_of(http, &["path"]).unwrap_or("/");
                    assert!(
                        served.contains(path),
                        "{at}: {probe} on {path}, not a route: {served:?}"
                    );
                    let port = http.get("port").expect("probe port");
                    assert!(
                        ports.contains(port),
                        "{at}: {probe} port {port:?} not a container port"
                    );
                } else {
                    assert!(
                        p.get("tcpSocket").is_some() || p.get("grpc").is_some(),
                        "{at}: {probe} without httpGet, tcpSocket or grpc"
                    );
                }
            }
        }
    }
}

#[test]
fn the_web_service_selects_the_web_pods_on_their_port() {
    let docs = manifests();
    let services: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| kind(d) == "Service")
        .collect();
    assert!(!services.is_empty(), "a Service for the web");
    for svc in services {
        let selector = get(svc, &["spec", "selector"])
            .and_then(Value::as_mapping)
            .expect("selector");
        let pods: Vec<&Value> = docs
            .iter()
            .map(|(_, d)| d)
            .filter(|d| kind(d) == "Deployment")
            .filter(|d| {
                let labels = get(d, &["spec", "template", "metadata", "labels"]);
                selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .collect();
        assert_eq!(
            pods.len(),
            1,
            "Service {} selects one Deployment",
            name(svc)
        );
        let ctr_ports: Vec<Value> = seq(pods[0], &["spec", "template", "spec", "containers"])
            .iter()
            .flat_map(|c| seq(c, &["ports"]))
            .flat_map(|p| [p.get("name").cloned(), p.get("containerPort").cloned()])
            .flatten()
            .collect();
        for port in seq(svc, &["spec", "ports"]) {
            let target = port.get("targetPort").expect("targetPort");
            assert!(
                ctr_ports.contains(target),
                "Service {}: targetPort {target:?}",
                name(svc)
            );
        }
        // The Deployment behind it runs the web server.
        let args = seq(pods[0], &["spec", "template", "spec", "containers"])[0]
            .get("args")
            .cloned();
        assert_eq!(
            args,
            Some(Value::Sequence(vec!["serve".into()])),
            "Service {} fronts `server serve`",
            name(svc)
        );
    }
}

#[test]
fn the_kustomization_lists_every_manifest_and_its_references_resolve() {
    let dir = deploy().join("k8s");
    let k = yaml(&dir.join("kustomization.yaml"));
    let listed: BTreeSet<String> = seq(&k, &["resources"])
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    for r in &listed {
        assert!(dir.join(r).exists(), "kustomization resource {r} missing");
    }
    for f in files(&dir, &|p| is_yaml(p) && !p.ends_with("kustomization.yaml")) {
        let rel = f.strip_prefix(&dir).unwrap().display().to_string();
        assert!(
            listed.contains(&rel),
            "{rel} is not in kustomization.yaml resources"
        );
    }
    // ConfigMaps: defined or generated; their files exist.
    let docs = manifests();
    let mut defined: BTreeSet<String> = env_sources(&docs).into_keys().collect();
    for g in seq(&k, &["configMapGenerator"]) {
        defined.insert(format!("ConfigMap/{}", str_of(g, &["name"]).unwrap()));
        for f in seq(g, &["files"]) {
            let f = f.as_str().unwrap();
            let file = f.split_once('=').map_or(f, |(_, p)| p);
            assert!(
                dir.join(file).exists(),
                "configMapGenerator file {file} missing"
            );
        }
    }
    for (w, pod) in workloads(&docs) {
        for v in seq(pod, &["volumes"]) {
            if let Some(n) = str_of(v, &["configMap", "name"]) {
                assert!(
                    defined.contains(&format!("ConfigMap/{n}")),
                    "{w}: volume ConfigMap/{n}"
                );
            }
        }
        for ctr in containers(pod) {
            let image = str_of(ctr, &["image"]).unwrap_or("");
            let ours = is_ours(Some(image));
            let known_image = seq(&k, &["images"])
                .iter()
                .any(|i| str_of(i, &["name"]) == Some(image));
            assert!(
                !ours || known_image,
                "{w}: image {image} is not set by kustomization.yaml images"
            );
        }
    }
}

#[test]
fn compose_runs_temporal_the_one_shot_set_ups_the_web_and_two_workers() {
    let c = compose();
    let svcs: BTreeMap<String, &Value> = services(&c).into_iter().collect();
    let ours: Vec<(&String, Vec<String>)> = svcs
        .iter()
        .filter(|(_, s)| is_ours(str_of(s, &["image"])))
        .map(|(n, s)| (n, compose_command(s).unwrap_or_default()))
        .collect();
    let running = |sub: &str| {
        ours.iter()
            .filter(|(_, c)| c.first().map(String::as_str) == Some(sub))
            .count()
    };
    assert_eq!(running("migrate"), 1, "one migrate service: {ours:?}");
    assert!(running("serve") >= 1, "a web service: {ours:?}");
    assert!(running("worker") >= 2, "two workers: {ours:?}");
    let image_of = |n: &str| str_of(svcs[n], &["image"]).unwrap_or("").to_string();
    for (want, image) in [
        ("postgres", "postgres:"),
        ("temporal", "temporalio/server:"),
        ("temporal-ui", "temporalio/ui:"),
        ("temporal-setup", "temporalio/admin-tools:"),
        ("temporal-schema", "temporalio/admin-tools:"),
    ] {
        assert!(svcs.contains_key(want), "compose service {want}");
        assert!(
            image_of(want).starts_with(image),
            "{want}: image {}",
            image_of(want)
        );
    }
    // Dependencies exist; the server processes wait for the migrations and
    // the search attributes; what they wait on with service_healthy has a
    // healthcheck.
    for (n, s) in &svcs {
        for dep in keys(s.get("depends_on")) {
            assert!(svcs.contains_key(&dep), "{n} depends on unknown {dep}");
            let condition = str_of(s, &["depends_on", &dep, "condition"]);
            if condition == Some("service_healthy") {
                assert!(
                    svcs[&dep].get("healthcheck").is_some(),
                    "{n} waits for {dep}'s health"
                );
            }
        }
        // Local files mounted exist.
        for v in seq(s, &["volumes"]) {
            if let Some(src) = v.as_str().and_then(|v| v.strip_prefix("./")) {
                let file = src.split(':').next().unwrap();
                assert!(deploy().join(file).exists(), "{n}: volume ./{file} missing");
            }
        }
    }
    for (n, cmd) in &ours {
        let s = svcs[*n];
        if cmd.first().map(String::as_str) == Some("migrate") {
            continue;
        }
        for dep in ["migrate", "temporal-setup"] {
            assert_eq!(
                str_of(s, &["depends_on", dep, "condition"]),
                Some("service_completed_successfully"),
                "{n} starts after {dep} completes"
            );
        }
        assert!(s.get("healthcheck").is_some(), "{n}: healthcheck");
        // Each process its own worker name.
        assert!(compose_env(s).contains_key("EPI_WORKER"), "{n}: EPI_WORKER");
    }
    let long_running: Vec<&String> = ours
        .iter()
        .filter(|(_, c)| c.first().map(String::as_str) != Some("migrate"))
        .map(|(n, _)| *n)
        .collect();
    let names: BTreeSet<String> = long_running
        .iter()
        .map(|n| compose_env(svcs[*n])["EPI_WORKER"].clone())
        .collect();
    assert_eq!(
        names.len(),
        long_running.len(),
        "EPI_WORKER differs per service"
    );
}

/// Days of a Temporal retention (`180d`, `4320h`).
fn retention_days(s: &str) -> f64 {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("retention `{s}`"));
    match unit {
        "d" => n,
        "h" => n / 24.0,
        _ => panic!("retention `{s}`: use d or h"),
    }
}

/// The first mapping under `key` anywhere in `v`.
fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Mapping(m) => m.get(key).or_else(|| m.values().find_map(|v| find(v, key))),
        Value::Sequence(s) => s.iter().find_map(|v| find(v, key)),
        _ => None,
    }
}

#[test]
fn the_temporal_namespace_set_up_matches_the_configuration_and_the_retention_policy() {
    // How long closed warnings (with their workflow history) are kept.
    let policy = yaml(&root().join("workflows/retention.yaml"));
    let keep = find(&policy, "closed_warnings")
        .and_then(|c| c.get("days"))
        .and_then(Value::as_f64)
        .expect("workflows/retention.yaml: closed_warnings.days");
    // The namespace each deployment uses, and the retention it is set up with.
    let c = compose();
    let svcs: BTreeMap<String, &Value> = services(&c).into_iter().collect();
    let web_env = svcs
        .values()
        .find(|s| {
            is_ours(str_of(s, &["image"])) && compose_env(s).contains_key("EPI_TEMPORAL_NAMESPACE")
        })
        .map(|s| compose_env(s))
        .expect("compose sets EPI_TEMPORAL_NAMESPACE");
    let setup = compose_env(svcs["temporal-setup"]);
    assert_eq!(
        setup["NAMESPACE"], web_env["EPI_TEMPORAL_NAMESPACE"],
        "compose: one namespace"
    );
    let mut retentions = vec![(
        "compose temporal-setup".to_string(),
        setup["NAMESPACE_RETENTION"].clone(),
    )];

    let docs = manifests();
    let config = docs
        .iter()
        .find(|(_, d)| {
            kind(d) == "ConfigMap" && get(d, &["data", "EPI_TEMPORAL_NAMESPACE"]).is_some()
        })
        .map(|(_, d)| d)
        .expect("a ConfigMap with EPI_TEMPORAL_NAMESPACE");
    let namespace = str_of(config, &["data", "EPI_TEMPORAL_NAMESPACE"]).unwrap();
    let job_env: BTreeMap<String, String> = workloads(&docs)
        .into_iter()
        .flat_map(|(_, pod)| containers(pod).cloned().collect::<Vec<_>>())
        .filter(|c| str_of(c, &["image"]).is_some_and(|i| i.starts_with("temporalio/admin-tools")))
        .flat_map(|c| seq(&c, &["env"]).to_vec())
        .filter_map(|e| {
            Some((
                str_of(&e, &["name"])?.to_string(),
                str_of(&e, &["value"])?.to_string(),
            ))
        })
        .collect();
    assert_eq!(
        job_env.get("NAMESPACE").map(String::as_str),
        Some(namespace),
        "k8s: one namespace"
    );
    retentions.push((
        "k8s temporal-setup Job".into(),
        job_env["NAMESPACE_RETENTION"].clone(),
    ));
    let address = str_of(config, &["data", "EPI_TEMPORAL_ADDRESS"]).unwrap();
    assert!(
        address.ends_with(&format!("//{}", job_env["TEMPORAL_ADDRESS"])),
        "the set-up Job and the servers reach the same frontend: {address} vs {}",
        job_env["TEMPORAL_ADDRESS"]
    );

    let helm = yaml(&deploy().join("temporal/helm-values.yaml"));
    let ns = seq(&helm, &["server", "config", "namespaces", "namespace"]);
    let entry = ns
        .iter()
        .find(|n| str_of(n, &["name"]) == Some(namespace))
        .unwrap_or_else(|| panic!("the Helm values create namespace {namespace}"));
    retentions.push((
        "Helm values".into(),
        str_of(entry, &["retention"]).unwrap().to_string(),
    ));
    for (at, r) in &retentions {
        assert!(
            retention_days(r) >= keep,
            "{at}: retention {r} is shorter than the {keep} days workflows/retention.yaml keeps closed warnings"
        );
    }

    // The set-up script creates the agreed search attributes as Keyword.
    let script = read(&deploy().join("k8s/temporal-setup.sh"));
    for sa in SEARCH_ATTRIBUTES {
        assert!(
            script.contains(sa),
            "temporal-setup.sh does not create {sa}"
        );
    }
    assert!(
        script.contains("--type Keyword"),
        "search attributes are Keyword"
    );
}
