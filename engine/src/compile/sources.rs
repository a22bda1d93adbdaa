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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_module_is_named_by_its_file_stem() {
        assert_eq!(module_name("rules/anomaly.rhai"), "anomaly");
        assert_eq!(module_name("dedupe.rhai"), "dedupe");
        assert!(is_declaration("rules/inputs/anomaly.yaml"));
        assert!(!is_declaration("rules/anomaly.rhai"));
    }

    #[test]
    fn load_dirs_reads_definitions_scripts_and_input_declarations_sorted() {
        let root = std::env::temp_dir().join(format!("epi-sources-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |p: &str, text: &str| {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("workflows/b.yaml", "b");
        write("workflows/forms/a.yml", "a");
        write("workflows/notes.txt", "not read");
        write("rules/x.rhai", "x");
        write("rules/inputs/x.yaml", "decl");
        write("rules/tests/x.yaml", "not read");
        let (w, r) = load_dirs(&root.join("workflows"), &root.join("rules")).unwrap();
        let names = |files: &[SourceFile]| -> Vec<String> {
            let prefix = format!("{}/", root.display());
            files.iter().map(|f| f.path.replace(&prefix, "")).collect()
        };
        assert_eq!(names(&w), ["workflows/b.yaml", "workflows/forms/a.yml"]);
        assert_eq!(names(&r), ["rules/inputs/x.yaml", "rules/x.rhai"]);
        let (_, none) = load_dirs(&root.join("workflows"), &root.join("no_rules")).unwrap();
        assert!(none.is_empty(), "a missing rules directory is no rules");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
