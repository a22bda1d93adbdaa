//! Reading `workflows/` and `rules/` from disk into [`SourceFile`]s.

use super::program::SourceFile;

/// Read every `*.yaml`/`*.yml` under `workflows`, `*.rhai` under `rules`
/// and the declarations of what the rules receive (`rules/inputs/*.yaml`,
/// see [`crate::rules::inputs`]), sorted by path. Paths are shown as given
/// (`workflows/warning.yaml`).
pub fn load_dirs(
    workflows: &std::path::Path,
    rules: &std::path::Path,
) -> std::io::Result<(Vec<SourceFile>, Vec<SourceFile>)> {
    fn walk(
        dir: &std::path::Path,
        exts: &[&str],
        out: &mut Vec<SourceFile>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, exts, out)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                let text = std::fs::read_to_string(&path)?;
                out.push(SourceFile {
                    path: path.display().to_string(),
                    text,
                });
            }
        }
        Ok(())
    }
    let (mut w, mut r) = (Vec::new(), Vec::new());
    walk(workflows, &["yaml", "yml"], &mut w)?;
    if rules.exists() {
        walk(rules, &["rhai"], &mut r)?;
        let inputs = rules.join("inputs");
        if inputs.is_dir() {
            walk(&inputs, &["yaml", "yml"], &mut r)?;
        }
    }
    w.sort();
    r.sort();
    Ok((w, r))
}

/// Module name of a rules file: its file stem (`rules/anomaly.rhai` -> `anomaly`).
pub fn module_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(path)
        .to_string()
}

/// Is `path` a declaration of rule inputs rather than a script?
pub(super) fn is_declaration(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}
