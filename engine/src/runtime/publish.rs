//! Publishing (issue 11, R8.3): the explicit step that makes a compiled
//! bundle's definitions current for new instances, recorded in the store
//! with who, when and why ([`store::PublicationRow`], numbered in order).
//! Running instances keep the version they started with (`by_hash`).
//!
//! Rules, the same for the CLI, the city's page and the start-up:
//! - a workflow whose `version:` is already stored with the same content
//!   changes nothing (content is compared file by file, by file name and
//!   text, so the same files read from another directory are the same);
//! - a changed content under a stored version number is refused, naming
//!   the workflow, the version and the files that differ;
//! - a new version must be numbered above the current one.
//!
//! At start ([`Runtime::publish_at_startup`]) only new versions are
//! published (by [`STARTUP`]); a file whose version is already stored
//! leaves the current publication as it is, so a version published or
//! rolled back from the CLI or the page survives a restart.
//!
//! Another process may publish into the same database: each round of the
//! runtime compares the store's latest publication number with its own and
//! reloads the programs ([`Runtime::follow_publications`]).

use super::{Error, Latest, Result, Runtime};
use crate::compile::program::{DefinitionSource, Program};
use crate::compile::Bundle;
use crate::store::{DefinitionRow, PublicationRow, Store};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Who publishes, and why (both required).
#[derive(Debug, Clone)]
pub struct Publication {
    pub by: String,
    pub reason: String,
}

/// The publisher recorded for the files published when a server starts.
pub const STARTUP: &str = "启动";

/// One stored definition version, for the versions list.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub workflow: String,
    pub version: i64,
    pub hash: String,
    /// New instances of the workflow start on it.
    pub current: bool,
    /// The publications that made it current (oldest first): the first is
    /// its author, the others re-publications and rollbacks.
    pub publications: Vec<PublicationRow>,
    /// When the definition was first stored.
    pub stored_at: DateTime<Utc>,
    /// Instances on it that have not ended (running, or failed and waiting).
    pub open: i64,
    pub total: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Make every workflow of the bundle current.
    Explicit,
    /// Publish only new versions; keep the current publication otherwise.
    Startup,
}

/// A file's name without its directory (`warning.yaml`, `anomaly.rhai`).
fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// The files of a source by name → text.
fn files(s: &DefinitionSource) -> BTreeMap<&str, &str> {
    std::iter::once(&s.workflow)
        .chain(&s.forms)
        .chain(&s.rules)
        .chain(&s.activities)
        .map(|f| (file_name(&f.path), f.text.as_str()))
        .collect()
}

/// The latest stored of several rows (an old database may hold a version
/// number twice).
fn latest_of(v: Vec<&DefinitionRow>) -> Option<&DefinitionRow> {
    v.into_iter().max_by_key(|d| d.published_at)
}

/// The names of the files that differ between two sources (empty: the same
/// content, wherever it was read from).
pub fn changed_files(a: &DefinitionSource, b: &DefinitionSource) -> Vec<String> {
    let (fa, fb) = (files(a), files(b));
    let names: BTreeSet<&str> = fa.keys().chain(fb.keys()).copied().collect();
    names
        .into_iter()
        .filter(|n| fa.get(n) != fb.get(n))
        .map(str::to_string)
        .collect()
}

fn stored_source(d: &DefinitionRow) -> Result<DefinitionSource> {
    serde_json::from_str(&d.source).map_err(|e| Error::Corrupt(format!("{}: {e}", d.hash)))
}

impl Publication {
    fn check(&self) -> Result<()> {
        if self.by.trim().is_empty() || self.reason.trim().is_empty() {
            return Err(Error::Refused("发布须注明发布人和原因".into()));
        }
        Ok(())
    }
}

impl<S: Store> Runtime<S> {
    /// The program new instances of `workflow` start on.
    pub fn latest_program(&self, workflow: &str) -> Option<Arc<Program>> {
        self.inner
            .latest
            .read()
            .expect("lock")
            .programs
            .get(workflow)
            .cloned()
    }

    /// Every current program, by workflow, and the publication they come from.
    pub fn current(&self) -> (Option<i64>, BTreeMap<String, Arc<Program>>) {
        let l = self.inner.latest.read().expect("lock");
        (l.seq, l.programs.clone())
    }

    /// Decide what publishing `bundle` makes current: the new definitions
    /// to store and the complete map workflow → hash. Refusals in Chinese,
    /// all of them at once.
    async fn plan(
        &self,
        bundle: &Bundle,
        mode: Mode,
        current: Option<&PublicationRow>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<DefinitionRow>, BTreeMap<String, String>)> {
        let store = &self.inner.store;
        let mut map = current.map(|c| c.definitions.clone()).unwrap_or_default();
        let mut new = Vec::new();
        let mut problems = Vec::new();
        for (name, p) in &bundle.workflows {
            let stored = store.definitions(name).await?;
            let version = i64::from(p.version);
            let mut same_version = Vec::new();
            let mut found = None;
            for d in stored.iter().filter(|d| d.version == version) {
                if d.hash == p.hash {
                    found = Some(d.hash.clone());
                    break;
                }
                let changed = changed_files(&stored_source(d)?, &p.source);
                if changed.is_empty() {
                    found = Some(d.hash.clone());
                    break;
                }
                same_version.push(changed);
            }
            if let Some(hash) = found {
                if mode == Mode::Explicit || !map.contains_key(name) {
                    map.insert(name.clone(), hash);
                }
                continue;
            }
            if let Some(changed) = same_version.into_iter().min_by_key(Vec::len) {
                problems.push(format!(
                    "工作流 {name} 的版本 {version} 已发布过不同的内容（变动的文件：{}）；修改内容须提高 version（例如改为 {}）后再发布",
                    changed.join("、"),
                    stored.iter().map(|d| d.version).max().unwrap_or(version) + 1
                ));
                continue;
            }
            let current_version = map
                .get(name)
                .and_then(|h| stored.iter().find(|d| &d.hash == h))
                .map(|d| d.version);
            if let Some(cv) = current_version.filter(|cv| version <= *cv) {
                problems.push(format!(
                    "工作流 {name} 的新内容标为版本 {version}，须高于当前发布的版本 {cv}"
                ));
                continue;
            }
            new.push(DefinitionRow {
                hash: p.hash.clone(),
                kind: name.clone(),
                version,
                source: serde_json::to_string(&p.source).expect("serialisable"),
                published_at: now,
            });
            map.insert(name.clone(), p.hash.clone());
        }
        if !problems.is_empty() {
            return Err(Error::Refused(problems.join("\n")));
        }
        Ok((new, map))
    }

    /// Publish `bundle` (already compiled, so valid): its workflows become
    /// current for new instances, here at once and in other processes on
    /// the same database at their next round. Refused (nothing written) if
    /// a content changed under a published version number, a new version is
    /// not numbered above the current one, an activity has no
    /// implementation, or nothing would change.
    pub async fn publish(&self, bundle: &Bundle, by: &Publication) -> Result<PublicationRow> {
        by.check()?;
        let missing = self.inner.activities.missing(bundle.activities.keys());
        if !missing.is_empty() {
            return Err(Error::Refused(format!(
                "以下活动在系统中没有实现，不能发布：{}",
                missing.join("、")
            )));
        }
        let current = self.inner.store.current_publication().await?;
        let (new, map) = self
            .plan(bundle, Mode::Explicit, current.as_ref(), self.wall_now())
            .await?;
        if current.as_ref().is_some_and(|c| c.definitions == map) {
            return Err(Error::Refused(
                "与当前发布的版本完全相同，没有需要发布的变化".into(),
            ));
        }
        self.record(bundle, new, map, "publish", by, None).await
    }

    /// The start-up rule: publish the bundle's new versions (by
    /// [`STARTUP`]); a version already stored changes nothing, so the
    /// current publication (perhaps made by the CLI, the page or a
    /// rollback) stays. A changed content under a published version number
    /// stops the start with the refusal.
    pub async fn publish_at_startup(&self, bundle: &Bundle) -> Result<Option<PublicationRow>> {
        let current = self.inner.store.current_publication().await?;
        let (new, map) = self
            .plan(bundle, Mode::Startup, current.as_ref(), self.wall_now())
            .await
            .map_err(|e| match e {
                Error::Refused(m) => Error::Refused(format!(
                    "启动时不能发布 workflows/ 与 rules/ 中的定义：\n{m}"
                )),
                e => e,
            })?;
        match current {
            Some(c) if c.definitions == map => {
                self.adopt(&c).await?;
                Ok(None)
            }
            _ => {
                let by = Publication {
                    by: STARTUP.into(),
                    reason: "启动时发布 workflows/ 与 rules/ 中的新版本".into(),
                };
                let row = self.record(bundle, new, map, "startup", &by, None).await?;
                for (name, hash) in &row.definitions {
                    tracing::info!(workflow = %name, %hash, publication = row.seq, "published definition at start-up");
                }
                Ok(Some(row))
            }
        }
    }

    /// Make an earlier definition current again: a new publication (kind
    /// `rollback`) pointing at its hash, the other workflows unchanged.
    /// `target` is a hash (or a prefix of at least 6 characters),
    /// `workflow@version`, or a version number when only one workflow has
    /// such a version other than its current one.
    pub async fn rollback(&self, target: &str, by: &Publication) -> Result<PublicationRow> {
        by.check()?;
        let current = self
            .inner
            .store
            .current_publication()
            .await?
            .ok_or_else(|| Error::Refused("尚无任何发布，无法回滚".into()))?;
        let d = self.resolve(target, &current).await?;
        if current.definitions.get(&d.kind) == Some(&d.hash) {
            return Err(Error::Refused(format!(
                "工作流 {} 的版本 {}（{}）已是当前版本",
                d.kind,
                d.version,
                &d.hash[..12.min(d.hash.len())]
            )));
        }
        // It must still compile (the stored texts, as published then).
        self.program(&d.hash).await?;
        let rollback_of = self
            .inner
            .store
            .publications(i64::MAX)
            .await?
            .into_iter()
            .find(|p| p.definitions.get(&d.kind) == Some(&d.hash))
            .map(|p| p.seq);
        let mut map = current.definitions.clone();
        map.insert(d.kind.clone(), d.hash.clone());
        let row = PublicationRow {
            seq: 0,
            kind: "rollback".into(),
            published_by: by.by.clone(),
            reason: by.reason.clone(),
            published_at: self.wall_now(),
            clock_at: self.now(),
            rollback_of,
            definitions: map,
        };
        let row = self.inner.store.publish(&[], &row).await?;
        tracing::info!(workflow = %d.kind, version = d.version, hash = %d.hash, publication = row.seq, by = %by.by, "rolled back");
        self.adopt(&row).await?;
        Ok(row)
    }

    /// The stored definition a rollback or migration target names.
    pub async fn resolve(&self, target: &str, current: &PublicationRow) -> Result<DefinitionRow> {
        let all = self.inner.store.all_definitions().await?;
        let target = target.trim();
        let found = if let Some((w, v)) = target.split_once('@') {
            let v: i64 = v
                .parse()
                .map_err(|_| Error::Refused(format!("`{target}`：版本号须为整数")))?;
            latest_of(
                all.iter()
                    .filter(|d| d.kind == w && d.version == v)
                    .collect(),
            )
        } else if let Ok(v) = target.parse::<i64>() {
            let candidates: Vec<&DefinitionRow> = all
                .iter()
                .filter(|d| d.version == v && current.definitions.get(&d.kind) != Some(&d.hash))
                .collect();
            let kinds: BTreeSet<&str> = candidates.iter().map(|d| d.kind.as_str()).collect();
            if kinds.len() > 1 {
                return Err(Error::Refused(format!(
                    "多个工作流都有版本 {v}（{}）；请写成 工作流@版本，例如 {}@{v}",
                    kinds.iter().copied().collect::<Vec<_>>().join("、"),
                    kinds.iter().next().expect("non-empty")
                )));
            }
            latest_of(candidates)
        } else if target.len() >= 6 {
            let m: Vec<&DefinitionRow> =
                all.iter().filter(|d| d.hash.starts_with(target)).collect();
            if m.len() > 1 {
                return Err(Error::Refused(format!(
                    "`{target}` 对应多个版本，请写出更长的哈希"
                )));
            }
            m.into_iter().next()
        } else {
            None
        };
        found
            .cloned()
            .ok_or_else(|| Error::Refused(format!("没有已发布的版本 `{target}`")))
    }

    /// Every stored version with its publications and instance counts,
    /// by workflow and version (newest first within a workflow).
    pub async fn versions(&self) -> Result<Vec<VersionInfo>> {
        let store = &self.inner.store;
        let defs = store.all_definitions().await?;
        let mut pubs = store.publications(i64::MAX).await?;
        pubs.reverse();
        let counts: BTreeMap<String, (i64, i64)> = store
            .count_by_definition()
            .await?
            .into_iter()
            .map(|c| (c.hash, (c.open, c.total)))
            .collect();
        let current = pubs
            .last()
            .map(|p| p.definitions.clone())
            .unwrap_or_default();
        let mut out: Vec<VersionInfo> = defs
            .into_iter()
            .map(|d| {
                // The publications where it became current.
                let mut made = Vec::new();
                let mut before: Option<&String> = None;
                for p in &pubs {
                    let now = p.definitions.get(&d.kind);
                    if now == Some(&d.hash) && before != Some(&d.hash) {
                        made.push(p.clone());
                    }
                    before = now;
                }
                let (open, total) = counts.get(&d.hash).copied().unwrap_or_default();
                VersionInfo {
                    current: current.get(&d.kind) == Some(&d.hash),
                    workflow: d.kind,
                    version: d.version,
                    hash: d.hash,
                    publications: made,
                    stored_at: d.published_at,
                    open,
                    total,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (
                a.workflow.as_str(),
                std::cmp::Reverse(a.version),
                std::cmp::Reverse(a.stored_at),
            )
                .cmp(&(
                    b.workflow.as_str(),
                    std::cmp::Reverse(b.version),
                    std::cmp::Reverse(b.stored_at),
                ))
        });
        Ok(out)
    }

    /// Reload the current programs if another process published since this
    /// runtime last looked (one indexed read per round). Returns whether it
    /// reloaded.
    pub async fn follow_publications(&self) -> Result<bool> {
        let seq = self.inner.store.publication_seq().await?;
        let known = self.inner.latest.read().expect("lock").seq;
        if seq.is_none() || seq <= known {
            return Ok(false);
        }
        let Some(row) = self.inner.store.current_publication().await? else {
            return Ok(false);
        };
        tracing::info!(publication = row.seq, by = %row.published_by, "a new publication: new instances use its definitions");
        self.adopt(&row).await?;
        Ok(true)
    }

    async fn record(
        &self,
        bundle: &Bundle,
        new: Vec<DefinitionRow>,
        map: BTreeMap<String, String>,
        kind: &str,
        by: &Publication,
        rollback_of: Option<i64>,
    ) -> Result<PublicationRow> {
        let row = PublicationRow {
            seq: 0,
            kind: kind.into(),
            published_by: by.by.clone(),
            reason: by.reason.clone(),
            published_at: self.wall_now(),
            clock_at: self.now(),
            rollback_of,
            definitions: map,
        };
        let row = self.inner.store.publish(&new, &row).await?;
        {
            let mut cache = self.inner.by_hash.write().expect("lock");
            for p in bundle.workflows.values() {
                cache.insert(p.hash.clone(), p.clone());
            }
        }
        for d in &new {
            tracing::info!(workflow = %d.kind, version = d.version, hash = %d.hash, publication = row.seq, by = %by.by, "published definition");
        }
        self.adopt(&row).await?;
        Ok(row)
    }

    /// Make `row`'s programs the ones new instances start on.
    async fn adopt(&self, row: &PublicationRow) -> Result<()> {
        let mut programs = BTreeMap::new();
        for (name, hash) in &row.definitions {
            programs.insert(name.clone(), self.program(hash).await?);
        }
        let mut l = self.inner.latest.write().expect("lock");
        if l.seq.is_some_and(|s| s > row.seq) {
            return Ok(());
        }
        *l = Latest {
            seq: Some(row.seq),
            programs,
        };
        Ok(())
    }

    /// Wall time, for the record of when something was published (the
    /// runtime's clock may be a rehearsal's or a test's).
    fn wall_now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::program::SourceFile;

    fn source(dir: &str, workflow: &str, rule: &str) -> DefinitionSource {
        let f = |name: &str, text: &str| SourceFile {
            path: format!("{dir}/{name}"),
            text: text.into(),
        };
        DefinitionSource {
            workflow: f("workflows/w.yaml", workflow),
            forms: vec![],
            rules: vec![f("rules/r.rhai", rule)],
            activities: Some(f("workflows/activities.yaml", "activities: {}")),
        }
    }

    #[test]
    fn the_same_files_from_another_directory_are_the_same_content() {
        let a = source("/srv/epi", "version: 1", "fn f() { 1 }");
        let b = source("/tmp/copy", "version: 1", "fn f() { 1 }");
        assert!(changed_files(&a, &b).is_empty());
        let c = source("/tmp/copy", "version: 1", "fn f() { 2 }");
        assert_eq!(changed_files(&a, &c), ["r.rhai"]);
        let mut d = c.clone();
        d.rules.clear();
        assert_eq!(changed_files(&a, &d), ["r.rhai"]);
    }
}
