//! The test copy of the definitions: `workflows/` and `rules/` copied into
//! a temporary directory with every timer's `after:` read as seconds instead
//! of hours (6h -> 6s) and the activities' retry times shortened (backoff
//! 1s, max_backoff 2s, timeout 5s), because the Temporal dev server does
//! not skip time, and without `schedules.yaml` (the embedded runtime would
//! start the 10:00 comparison by itself; the scenarios start what they
//! need). The real files are never changed; everything else in the copy
//! (states, texts, rules, versions) is what the application runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The repository's root (the temporal crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate in a workspace")
        .to_path_buf()
}

/// A test copy of `workflows/` and `rules/`, removed when dropped.
pub struct TestDefinitions {
    pub dir: tempfile::TempDir,
}

impl TestDefinitions {
    /// Copy the repository's definitions and shorten their durations.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = repo_root();
        for sub in ["workflows", "rules"] {
            copy_tree(&root.join(sub), &dir.path().join(sub), &|path, text| {
                if sub == "workflows" && path.extension().is_some_and(|e| e == "yaml") {
                    shorten(text)
                } else {
                    text.to_string()
                }
            });
        }
        std::fs::remove_file(dir.path().join("workflows/schedules.yaml")).expect("schedules.yaml");
        TestDefinitions { dir }
    }

    pub fn workflows(&self) -> PathBuf {
        self.dir.path().join("workflows")
    }

    pub fn rules(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    /// Rewrite one file of the copy (a new version to publish, say).
    pub fn edit(&self, file: &str, f: impl FnOnce(&str) -> String) {
        let path = self.workflows().join(file);
        let text = std::fs::read_to_string(&path).expect("definition file");
        std::fs::write(&path, f(&text)).expect("write definition");
    }

    /// Compile the copy as the application would, its files named as in
    /// the repository (`workflows/warning.yaml`): a definition's hash
    /// covers its files' names, and two copies must hash alike.
    pub fn bundle(&self) -> engine::Bundle {
        let (mut w, mut r) =
            engine::load_dirs(&self.workflows(), &self.rules()).expect("load copy");
        let base = format!("{}/", self.dir.path().display());
        for f in w.iter_mut().chain(r.iter_mut()) {
            if let Some(rel) = f.path.strip_prefix(&base) {
                f.path = rel.to_string();
            }
        }
        match engine::compile_bundle(&w, &r, &engine::Options::default()) {
            Ok(b) => b,
            Err(e) => panic!("the test copy of the definitions does not compile: {e:?}"),
        }
    }
}

fn copy_tree(from: &Path, to: &Path, map: &dyn Fn(&Path, &str) -> String) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target, map);
        } else {
            match std::fs::read_to_string(&path) {
                Ok(text) => std::fs::write(&target, map(&path, &text)).expect("write copy"),
                Err(_) => {
                    std::fs::copy(&path, &target).expect("copy");
                }
            }
        }
    }
}

/// The durations a test copy rewrites, by YAML key: a timer's `after` is
/// read in seconds instead of hours; retry times become fixed short ones.
fn shortened(key: &str, value: &str) -> Option<String> {
    let d = humantime::parse_duration(value).ok()?;
    match key {
        "after" => Some(format_duration(d / 3600)),
        "backoff" => Some("1s".into()),
        "max_backoff" => Some("2s".into()),
        "timeout" => Some("5s".into()),
        _ => None,
    }
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs().max(1))
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// Rewrite `KEY: DURATION` wherever it stands on a line (block style
/// `after: 6h` or inside a flow map `{ backoff: 30s, timeout: 30s }`);
/// comments, anchors and everything else stay as written.
pub fn shorten(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let (code, comment) = match line.find(" #") {
            Some(p) => line.split_at(p),
            None if line.trim_start().starts_with('#') => ("", line),
            None => (line, ""),
        };
        out.push_str(&shorten_code(code));
        out.push_str(comment);
    }
    out
}

fn shorten_code(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    // Split at `, `, `{ ` and `}` boundaries keeping them, then look at
    // each `key: value` piece.
    while !rest.is_empty() {
        let end = rest
            .find([',', '{', '}'])
            .map(|p| p + 1)
            .unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(end);
        let (body, sep) = match piece.chars().last() {
            Some(c @ (',' | '{' | '}')) => (&piece[..piece.len() - 1], c.to_string()),
            _ => (piece, String::new()),
        };
        out.push_str(&shorten_piece(body));
        out.push_str(&sep);
        rest = tail;
    }
    out
}

fn shorten_piece(piece: &str) -> String {
    let Some((k, v)) = piece.split_once(':') else {
        return piece.to_string();
    };
    let key = k.trim().trim_start_matches("- ");
    let value = v.trim();
    match shortened(key, value) {
        Some(new) => {
            let lead = &v[..v.len() - v.trim_start().len()];
            let trail = &v[v.trim_end().len()..];
            format!("{k}:{lead}{new}{trail}")
        }
        None => piece.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn durations_are_shortened_and_the_rest_kept() {
        assert_eq!(shorten("        after: 6h"), "        after: 6s");
        assert_eq!(shorten("  after: 30m # half"), "  after: 500ms # half");
        assert_eq!(
            shorten("    retry: { attempts: 8, backoff: 30s, max_backoff: 10m, timeout: 30s }"),
            "    retry: { attempts: 8, backoff: 1s, max_backoff: 2s, timeout: 5s }"
        );
        assert_eq!(shorten("  count_window: 24h"), "  count_window: 24h");
        assert_eq!(shorten("# after: 6h"), "# after: 6h");
        assert_eq!(
            shorten("text: \"请在${timers.a.after}内\""),
            "text: \"请在${timers.a.after}内\""
        );
    }
}
