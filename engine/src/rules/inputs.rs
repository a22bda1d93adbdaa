//! What the rule functions receive and must return, declared beside them
//! (`rules/inputs/<script>.yaml`), and the check that runs every declared
//! function on its samples.
//!
//! ```yaml
//! types:
//!   vaccination: { doses: int, completed: bool }
//!   person:
//!     nat_reports?: [nat_report]      # `?`: the key may be absent
//!     vaccination: vaccination
//!     health_code: text(green, yellow, red)
//! functions:
//!   evaluate:                          # rules/anomaly.rhai: fn evaluate(person)
//!     params: { person: person }
//!     returns: [text]
//!     samples:
//!       - name: 红码
//!         person: { vaccination: { doses: 3, completed: true }, health_code: red }
//! ```
//!
//! Types: `text`, `text(a, b)` (one of these texts), `int`, `number`,
//! `bool`, `()` (nothing), `any`, `[T]` (a list), `A | B`, a mapping (its
//! keys; `key?` may be absent), or a name under `types:` (of any file).
//!
//! The check runs each sample through a stricter copy of the rule engine:
//! reading a property a declared map does not have is an error (`未知属性`),
//! a declared optional property that is absent reads as `()` as at run time.

use super::{base_engine, unwrap_fn_error, words, Limits, Rules};
use crate::definition::source::{Path, Pos, SourceMap};
use rhai::{Dynamic, Scope};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A problem found by [`check`], at `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// A declared type.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    Any,
    Text,
    OneOf(Vec<String>),
    Int,
    Number,
    Bool,
    Unit,
    List(Box<Ty>),
    Map(Vec<Field>),
    Union(Vec<Ty>),
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub optional: bool,
}

/// One declared function with its samples.
#[derive(Debug, Clone)]
pub struct FnDecl {
    pub name: String,
    pub pos: Pos,
    pub params: Vec<(String, Ty)>,
    pub returns: Ty,
    pub returns_pos: Pos,
    pub samples: Vec<Sample>,
}

/// One sample call: its arguments in parameter order.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub pos: Pos,
    pub args: Vec<Value>,
}

/// One file of declarations, for the script named after it.
#[derive(Debug, Clone)]
pub struct DeclFile {
    pub path: String,
    pub module: String,
    pub functions: Vec<FnDecl>,
}

/// Every declaration file, with the named types of all of them.
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    pub files: Vec<DeclFile>,
    pub types: BTreeMap<String, Ty>,
}

impl Declarations {
    /// The declared function `module::function`, if any.
    pub fn function(&self, module: &str, function: &str) -> Option<&FnDecl> {
        self.files
            .iter()
            .filter(|f| f.module == module)
            .flat_map(|f| &f.functions)
            .find(|f| f.name == function)
    }

    /// Does `v` have type `ty`? The first difference otherwise: where in
    /// the value (`.nat_reports[0].result`) and what is wrong.
    pub fn conforms(&self, ty: &Ty, v: &Value) -> Result<(), (String, String)> {
        self.conforms_at(ty, v, String::new(), 0)
    }

    fn conforms_at(
        &self,
        ty: &Ty,
        v: &Value,
        at: String,
        depth: usize,
    ) -> Result<(), (String, String)> {
        let wrong = |at: String| {
            Err((
                at,
                format!("应为{}，实际是{}", self.describe(ty), json_word(v)),
            ))
        };
        if depth > 32 {
            return Ok(());
        }
        match ty {
            Ty::Any => Ok(()),
            Ty::Text if v.is_string() => Ok(()),
            Ty::OneOf(options) => match v.as_str() {
                Some(s) if options.iter().any(|o| o == s) => Ok(()),
                _ => wrong(at),
            },
            Ty::Int if v.is_i64() || v.is_u64() => Ok(()),
            Ty::Number if v.is_number() => Ok(()),
            Ty::Bool if v.is_boolean() => Ok(()),
            Ty::Unit if v.is_null() => Ok(()),
            Ty::List(item) => match v.as_array() {
                Some(items) => {
                    for (i, x) in items.iter().enumerate() {
                        self.conforms_at(item, x, format!("{at}[{i}]"), depth + 1)?;
                    }
                    Ok(())
                }
                None => wrong(at),
            },
            Ty::Map(fields) => match v.as_object() {
                Some(m) => self.map_conforms_at(fields, m, &at, depth),
                None => wrong(at),
            },
            Ty::Union(options) => {
                if options
                    .iter()
                    .any(|t| self.conforms_at(t, v, at.clone(), depth + 1).is_ok())
                {
                    Ok(())
                } else {
                    wrong(at)
                }
            }
            Ty::Named(n) => match self.types.get(n) {
                Some(t) => self.conforms_at(t, v, at, depth + 1),
                None => Ok(()),
            },
            _ => wrong(at),
        }
    }

    /// Does the object `m` (at `at`) have exactly the declared `fields`?
    /// First an undeclared key, then each field in declared order.
    fn map_conforms_at(
        &self,
        fields: &[Field],
        m: &serde_json::Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<(), (String, String)> {
        for k in m.keys() {
            if !fields.iter().any(|f| &f.name == k) {
                let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                return Err((
                    format!("{at}.{k}"),
                    format!("多出的项 `{k}`：声明的项只有 {}", names.join("、")),
                ));
            }
        }
        for f in fields {
            match m.get(&f.name) {
                Some(x) => self.conforms_at(&f.ty, x, format!("{at}.{}", f.name), depth + 1)?,
                None if f.optional => {}
                None => {
                    return Err((
                        format!("{at}.{}", f.name),
                        format!("缺少 `{}`（{}）", f.name, self.describe(&f.ty)),
                    ))
                }
            }
        }
        Ok(())
    }

    /// A type in words.
    pub fn describe(&self, ty: &Ty) -> String {
        match ty {
            Ty::Any => "任意值".into(),
            Ty::Text => "文本".into(),
            Ty::OneOf(o) => format!("文本（{} 之一）", o.join("、")),
            Ty::Int => "整数".into(),
            Ty::Number => "数字".into(),
            Ty::Bool => "真假值".into(),
            Ty::Unit => "空值 ()".into(),
            Ty::List(t) => format!("{}的列表", self.describe(t)),
            Ty::Map(fields) => {
                let names: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}{}", f.name, if f.optional { "?" } else { "" }))
                    .collect();
                format!("映射 {{{}}}", names.join(", "))
            }
            Ty::Union(ts) => ts
                .iter()
                .map(|t| self.describe(t))
                .collect::<Vec<_>>()
                .join("或"),
            Ty::Named(n) => n.to_string(),
        }
    }

    /// Every map type reachable from the declarations: (label, keys,
    /// required keys), for the property check.
    fn shapes(&self) -> Vec<Shape> {
        fn walk(ty: &Ty, label: &str, out: &mut Vec<Shape>) {
            match ty {
                Ty::List(t) => walk(t, label, out),
                Ty::Union(ts) => ts.iter().for_each(|t| walk(t, label, out)),
                Ty::Map(fields) if !fields.is_empty() => {
                    out.push(Shape {
                        label: label.to_string(),
                        keys: fields.iter().map(|f| f.name.clone()).collect(),
                        required: fields
                            .iter()
                            .filter(|f| !f.optional)
                            .map(|f| f.name.clone())
                            .collect(),
                    });
                    for f in fields {
                        walk(&f.ty, &f.name, out);
                    }
                }
                _ => {}
            }
        }
        // Parameters first: a message names the map by the parameter.
        let mut out = Vec::new();
        for f in self.files.iter().flat_map(|f| &f.functions) {
            for (p, ty) in &f.params {
                match ty {
                    Ty::Named(n) => {
                        if let Some(t) = self.types.get(n) {
                            walk(t, p, &mut out)
                        }
                    }
                    t => walk(t, p, &mut out),
                }
            }
        }
        for (name, ty) in &self.types {
            walk(ty, name, &mut out);
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Shape {
    label: String,
    keys: BTreeSet<String>,
    required: BTreeSet<String>,
}

fn json_word(v: &Value) -> String {
    match v {
        Value::Null => "空值 ()".into(),
        Value::Bool(b) => format!("真假值 {b}"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("整数 {n}"),
        Value::Number(n) => format!("小数 {n}"),
        Value::String(s) => format!("文本 \"{}\"", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "列表".into(),
        Value::Object(_) => "映射".into(),
    }
}

/// Parse a type written in YAML.
fn parse_type(v: &serde_yaml::Value) -> Result<Ty, String> {
    use serde_yaml::Value as Y;
    match v {
        Y::String(s) => parse_type_text(s),
        Y::Sequence(items) if items.len() == 1 => Ok(Ty::List(Box::new(parse_type(&items[0])?))),
        Y::Sequence(_) => Err("列表类型写作 [类型]，方括号里只写一个类型".into()),
        Y::Mapping(m) => {
            let mut fields = Vec::new();
            for (k, t) in m {
                let Some(k) = k.as_str() else {
                    return Err("映射的键须是文字".into());
                };
                let (name, optional) = match k.strip_suffix('?') {
                    Some(n) => (n, true),
                    None => (k, false),
                };
                fields.push(Field {
                    name: name.to_string(),
                    ty: parse_type(t)?,
                    optional,
                });
            }
            Ok(Ty::Map(fields))
        }
        Y::Null => Ok(Ty::Unit),
        other => Err(format!("无法识别的类型 `{}`", yaml_text(other))),
    }
}

fn yaml_text(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn parse_type_text(s: &str) -> Result<Ty, String> {
    let parts = split_top(s, '|');
    if parts.len() > 1 {
        return parts
            .iter()
            .map(|p| parse_type_text(p))
            .collect::<Result<Vec<_>, _>>()
            .map(Ty::Union);
    }
    let t = s.trim();
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return Ok(Ty::List(Box::new(parse_type_text(inner)?)));
    }
    if let Some(inner) = t.strip_prefix("text(").and_then(|r| r.strip_suffix(')')) {
        let options: Vec<String> = inner
            .split(',')
            .map(|o| o.trim().trim_matches('"').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if options.is_empty() {
            return Err(format!("`{t}` 中没有列出可选的文本"));
        }
        return Ok(Ty::OneOf(options));
    }
    Ok(match t {
        "any" => Ty::Any,
        "text" => Ty::Text,
        "int" => Ty::Int,
        "number" => Ty::Number,
        "bool" => Ty::Bool,
        "()" => Ty::Unit,
        "" => return Err("类型是空的".into()),
        name if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Ty::Named(name.to_string())
        }
        other => return Err(format!("无法识别的类型 `{other}`")),
    })
}

fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Where the findings of one declaration file go: each at the key or the
/// value of a YAML path.
struct FileFindings<'a> {
    path: &'a str,
    map: &'a SourceMap,
    findings: &'a mut Vec<Finding>,
}

impl FileFindings<'_> {
    fn push(&mut self, pos: Pos, message: String) {
        self.findings.push(Finding {
            file: self.path.to_string(),
            line: pos.line,
            col: pos.col,
            message,
        });
    }

    /// A finding at the key (`key: true`) or the value of `p`.
    fn at(&mut self, p: &Path, key: bool, message: String) {
        let pos = if key {
            self.map.key(p)
        } else {
            self.map.value(p)
        };
        self.push(pos, message);
    }
}

/// Read the declaration files (`rules/inputs/*.yaml`). Problems in them
/// are returned as findings; what could be read is kept.
pub fn parse(files: &[(String, String)]) -> (Declarations, Vec<Finding>) {
    let mut decls = Declarations::default();
    let mut findings = Vec::new();
    let mut named_at: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    for (path, text) in files {
        let map = SourceMap::build(text);
        let mut out = FileFindings {
            path,
            map: &map,
            findings: &mut findings,
        };
        if let Some(file) = parse_file(path, text, &mut decls.types, &mut named_at, &mut out) {
            decls.files.push(file);
        }
    }
    // With every named type known: unknown names, then the samples' types.
    for (path, text) in files {
        let map = SourceMap::build(text);
        let Some(file) = decls.files.iter().find(|f| &f.path == path) else {
            continue;
        };
        let mut out = FileFindings {
            path,
            map: &map,
            findings: &mut findings,
        };
        for f in &file.functions {
            check_declared_types(&decls, f, &mut out);
        }
    }
    (decls, findings)
}

/// One declaration file: its named types go into `types` (each name once
/// over all files, `named_at` says where), its functions into the result.
/// None if it is not a YAML mapping.
fn parse_file(
    path: &str,
    text: &str,
    types: &mut BTreeMap<String, Ty>,
    named_at: &mut BTreeMap<String, (String, Pos)>,
    out: &mut FileFindings,
) -> Option<DeclFile> {
    use serde_yaml::Value as Y;
    let doc: Y = match serde_yaml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            out.push(Pos { line, col }, format!("YAML 写法有误：{e}"));
            return None;
        }
    };
    let root = Path::root();
    let Some(top) = doc.as_mapping() else {
        out.at(&root, false, "应以 `types:` 或 `functions:` 开头".into());
        return None;
    };
    for (k, _) in top {
        let k = k.as_str().unwrap_or("");
        if !matches!(k, "types" | "functions") {
            out.at(
                &root.key(k),
                true,
                format!("未知的键 `{k}`：这里只写 `types:` 和 `functions:`"),
            );
        }
    }
    if let Some(named) = doc.get("types").and_then(Y::as_mapping) {
        for (name, t) in named {
            let name = name.as_str().unwrap_or_default().to_string();
            let p = root.key("types").key(&name);
            match parse_type(t) {
                Ok(ty) => {
                    if let Some((other, at)) = named_at.get(&name) {
                        out.at(
                            &p,
                            true,
                            format!("类型 `{name}` 已在 {other}:{}:{} 声明过", at.line, at.col),
                        );
                    } else {
                        named_at.insert(name.clone(), (path.to_string(), out.map.key(&p)));
                        types.insert(name, ty);
                    }
                }
                Err(m) => out.at(&p, false, m),
            }
        }
    }
    let module = std::path::Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(path)
        .to_string();
    let mut file = DeclFile {
        path: path.to_string(),
        module,
        functions: Vec::new(),
    };
    if let Some(functions) = doc.get("functions").and_then(Y::as_mapping) {
        for (name, f) in functions {
            let name = name.as_str().unwrap_or_default().to_string();
            file.functions.push(parse_function(name, f, out));
        }
    }
    Some(file)
}

/// One function under `functions:`.
fn parse_function(name: String, f: &serde_yaml::Value, out: &mut FileFindings) -> FnDecl {
    use serde_yaml::Value as Y;
    let fp = Path::root().key("functions").key(&name);
    let mut params = Vec::new();
    if let Some(ps) = f.get("params").and_then(Y::as_mapping) {
        for (p, t) in ps {
            let p = p.as_str().unwrap_or_default().to_string();
            match parse_type(t) {
                Ok(ty) => params.push((p, ty)),
                Err(m) => out.at(&fp.key("params").key(&p), false, m),
            }
        }
    }
    for (k, _) in f.as_mapping().into_iter().flatten() {
        let k = k.as_str().unwrap_or("");
        if !matches!(k, "params" | "returns" | "samples" | "called") {
            out.at(
                &fp.key(k),
                true,
                format!("未知的键 `{k}`：函数下只写 params、returns、samples 和 called"),
            );
        }
    }
    let returns = match f.get("returns") {
        Some(t) => parse_type(t).unwrap_or_else(|m| {
            out.at(&fp.key("returns"), false, m);
            Ty::Any
        }),
        None => {
            out.at(
                &fp,
                true,
                format!("函数 `{name}` 缺少 `returns:`（应返回什么）"),
            );
            Ty::Any
        }
    };
    let list = f.get("samples").and_then(Y::as_sequence);
    if list.is_none_or(|l| l.is_empty()) {
        out.at(
            &fp,
            true,
            format!("函数 `{name}` 至少需要一个样例（`samples:`），校验时逐个运行"),
        );
    }
    let samples = list
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| parse_sample(&name, &params, &fp.key("samples").index(i), i, s, out))
        .collect();
    FnDecl {
        pos: out.map.key(&fp),
        returns_pos: out.map.value(&fp.key("returns")),
        name,
        params,
        returns,
        samples,
    }
}

/// The `i`th sample (at `sp`) of function `name`: its arguments in the
/// order of `params`; keys that are no parameter are findings.
fn parse_sample(
    name: &str,
    params: &[(String, Ty)],
    sp: &Path,
    i: usize,
    s: &serde_yaml::Value,
    out: &mut FileFindings,
) -> Sample {
    let sample_name = s
        .get("name")
        .and_then(serde_yaml::Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("第 {} 个", i + 1));
    for (k, _) in s.as_mapping().into_iter().flatten() {
        let k = k.as_str().unwrap_or("");
        if k != "name" && !params.iter().any(|(p, _)| p == k) {
            out.at(
                &sp.key(k),
                true,
                format!("样例中的 `{k}` 不是 `{name}` 的参数"),
            );
        }
    }
    let args = params
        .iter()
        .map(|(p, _)| {
            s.get(p.as_str())
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or(Value::Null)
        })
        .collect();
    Sample {
        name: sample_name,
        pos: out.map.value(sp),
        args,
    }
}

/// With every named type known: names in `f`'s parameters and return
/// type that no file declares, then sample arguments of the wrong type.
fn check_declared_types(decls: &Declarations, f: &FnDecl, out: &mut FileFindings) {
    let fp = Path::root().key("functions").key(&f.name);
    for (p, ty) in &f.params {
        if let Some(n) = unknown_name(decls, ty) {
            out.at(
                &fp.key("params").key(p),
                false,
                format!("未知的类型 `{n}`：请在 `types:` 下声明"),
            );
        }
    }
    if let Some(n) = unknown_name(decls, &f.returns) {
        out.at(
            &fp.key("returns"),
            false,
            format!("未知的类型 `{n}`：请在 `types:` 下声明"),
        );
    }
    for (si, s) in f.samples.iter().enumerate() {
        for ((p, ty), v) in f.params.iter().zip(&s.args) {
            if let Err((inner, m)) = decls.conforms(ty, v) {
                let mut yp = fp.key("samples").index(si).key(p);
                for seg in value_path(&inner) {
                    yp = match seg {
                        Seg::Key(k) => yp.key(&k),
                        Seg::Index(i) => yp.index(i),
                    };
                }
                out.at(&yp, false, format!("样例「{}」的 `{p}{inner}` {m}", s.name));
            }
        }
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

/// `.a[0].b` -> [Key(a), Index(0), Key(b)].
fn value_path(s: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            out.push(Seg::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            out.push(Seg::Index(r[..end].parse().unwrap_or(0)));
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            break;
        }
    }
    out
}

fn unknown_name(decls: &Declarations, ty: &Ty) -> Option<String> {
    match ty {
        Ty::Named(n) if !decls.types.contains_key(n) => Some(n.clone()),
        Ty::List(t) => unknown_name(decls, t),
        Ty::Union(ts) => ts.iter().find_map(|t| unknown_name(decls, t)),
        Ty::Map(fs) => fs.iter().find_map(|f| unknown_name(decls, &f.ty)),
        _ => None,
    }
}

/// The closest of `names` to `word`, if it is close (a misspelling).
pub fn closest<'a>(word: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let best = names
        .into_iter()
        .filter(|n| *n != word)
        .map(|n| (edit_distance(word, n), n))
        .min()?;
    (best.0 <= 2.max(word.chars().count() / 4)).then_some(best.1)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = if ca == b[j] {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Run every declared function on each of its samples with the rules
/// compiled in `rules`: missing functions, unknown properties, values of
/// two types compared, other run-time errors and wrong return values.
/// Each problem is reported once, at its place (the first sample that
/// shows it is named).
pub fn check(rules: &Rules, decls: &Declarations, limits: Limits) -> Vec<Finding> {
    let engine = checking_engine(rules, decls, &limits);
    let mut findings: Vec<Finding> = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &decls.files {
        let Some(script) = rules.scripts.get(&file.module) else {
            findings.push(Finding {
                file: file.path.clone(),
                line: 1,
                col: 1,
                message: format!(
                    "没有与声明对应的规则脚本 `{}.rhai`（声明文件以脚本名命名）",
                    file.module
                ),
            });
            continue;
        };
        for f in &file.functions {
            if let Some(message) = missing_function(rules, &file.module, script, f) {
                findings.push(Finding {
                    file: file.path.clone(),
                    line: f.pos.line,
                    col: f.pos.col,
                    message,
                });
                continue;
            }
            for s in &f.samples {
                if f.params
                    .iter()
                    .zip(&s.args)
                    .any(|((_, ty), v)| decls.conforms(ty, v).is_err())
                {
                    continue; // reported at the sample already
                }
                let Some((line, col, message)) = run_sample(&engine, decls, script, f, s) else {
                    continue;
                };
                if seen.insert((script.origin.clone(), line, col)) {
                    findings.push(Finding {
                        file: script.origin.clone(),
                        line,
                        col,
                        message: format!(
                            "{message}（{}::{}，样例「{}」）",
                            file.module, f.name, s.name
                        ),
                    });
                }
            }
        }
    }
    findings
}

/// The stricter copy of the rule engine the samples run in: every script
/// registered as its module, and reading a property that no declared map
/// shape of the value has is an error.
fn checking_engine(rules: &Rules, decls: &Declarations, limits: &Limits) -> rhai::Engine {
    let shapes = Arc::new(decls.shapes());
    let mut engine = base_engine(limits);
    for (name, script) in &rules.scripts {
        if let Some(m) = &script.module {
            engine.register_static_module(name.as_str(), m.clone());
        }
    }
    let s2 = shapes.clone();
    engine.on_map_missing_property(move |map, prop, _| {
        let is = |s: &&Shape| {
            s.required.iter().all(|k| map.contains_key(k.as_str()))
                && map.keys().all(|k| s.keys.contains(k.as_str()))
        };
        let matching: Vec<&Shape> = s2.iter().filter(is).collect();
        if matching.is_empty() || matching.iter().any(|s| s.keys.contains(prop)) {
            // A map the rule built itself, or a declared optional key.
            return Ok(Dynamic::UNIT.into());
        }
        let s = matching[0];
        let mut message = format!(
            "未知属性 `{prop}`：{} 只有 {}",
            s.label,
            s.keys.iter().cloned().collect::<Vec<_>>().join("、")
        );
        if let Some(c) = closest(prop, s.keys.iter().map(String::as_str)) {
            message.push_str(&format!("；是否想写 `{c}`？"));
        }
        Err(rhai::EvalAltResult::ErrorRuntime(message.into(), rhai::Position::NONE).into())
    });
    engine
}

/// Where function `name` starts in the script (1:1 if not found).
fn fn_at(script: &super::Script, name: &str) -> (usize, usize) {
    super::function_offsets(&script.source)
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or((1, 1), |(_, o)| words::line_col(&script.source, o))
}

/// Why the declared `f` has no function with its arity in `script` (of
/// module `module`), if it has none.
fn missing_function(
    rules: &Rules,
    module: &str,
    script: &super::Script,
    f: &FnDecl,
) -> Option<String> {
    let arity = f.params.len();
    let signature = format!(
        "{}({})",
        f.name,
        f.params
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if rules.has_function(module, &f.name, Some(arity)) {
        return None;
    }
    let arities = script.functions.get(&f.name);
    Some(match arities {
        Some(a) => format!(
            "{} 中的函数 `{}` 有 {} 个参数，声明的是 `{signature}`",
            script.origin,
            f.name,
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/")
        ),
        None => {
            let mut m = format!("{} 中缺少函数 `{signature}`", script.origin);
            if let Some(c) = closest(&f.name, script.functions.keys().map(String::as_str)) {
                m.push_str(&format!("；脚本中有 `{c}`，是否写错了名字？"));
            }
            m
        }
    })
}

/// Call `f` on sample `s`: the error or wrong return value it shows, with
/// its line and column in the script; None if it returns a right value.
fn run_sample(
    engine: &rhai::Engine,
    decls: &Declarations,
    script: &super::Script,
    f: &FnDecl,
    s: &Sample,
) -> Option<(usize, usize, String)> {
    let args: Vec<Dynamic> = s.args.iter().map(super::to_dynamic).collect();
    let opts = rhai::CallFnOptions::new()
        .eval_ast(false)
        .rewind_scope(true);
    let mut scope = Scope::new();
    match engine.call_fn_with_options::<Dynamic>(opts, &mut scope, &script.ast, &f.name, args) {
        Err(e) => {
            let inner = unwrap_fn_error(&e);
            let pos = inner.position();
            let (l, c) = match (pos.line(), pos.position()) {
                (Some(l), Some(c)) => (l, c),
                (Some(l), None) => (l, 1),
                _ => fn_at(script, &f.name),
            };
            Some((l, c, words::describe_eval_error(inner)))
        }
        Ok(d) => {
            let v = rhai::serde::from_dynamic::<Value>(&d).unwrap_or(Value::Null);
            let (at, m) = decls.conforms(&f.returns, &v).err()?;
            let (l, c) = fn_at(script, &f.name);
            let message = if at.is_empty() {
                format!(
                    "返回值不对：`{}` 应返回{}，实际返回{}",
                    f.name,
                    decls.describe(&f.returns),
                    json_word(&v)
                )
            } else {
                format!(
                    "返回值不对：`{}` 应返回{}，其中 `{at}` {m}",
                    f.name,
                    decls.describe(&f.returns)
                )
            };
            Some((l, c, message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse() {
        let t = |s: &str| parse_type(&serde_yaml::from_str(s).unwrap()).unwrap();
        assert_eq!(t("[text]"), Ty::List(Box::new(Ty::Text)));
        assert_eq!(t("\"int | ()\""), Ty::Union(vec![Ty::Int, Ty::Unit]));
        assert_eq!(
            t("text(red, green)"),
            Ty::OneOf(vec!["red".into(), "green".into()])
        );
        assert_eq!(
            t("{ a?: int }"),
            Ty::Map(vec![Field {
                name: "a".into(),
                ty: Ty::Int,
                optional: true
            }])
        );
    }

    #[test]
    fn misspellings_are_recognised() {
        assert_eq!(
            closest("vacination", ["nat_reports", "vaccination", "health_code"]),
            Some("vaccination")
        );
        assert_eq!(closest("zzz", ["nat_reports"]), None);
    }
}
