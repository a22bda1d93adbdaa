//! The only place a `rhai::Engine` is built.
//!
//! Owns the sandbox (operation, call-depth, expression-depth and size
//! limits; no modules from disk, no `eval`, no clock, `print`/`debug`
//! swallowed into tracing), compiles the scripts of `rules/` once into
//! static modules (`anomaly::evaluate(...)`) and compiles the expressions
//! written in workflow definitions. Values cross the boundary as
//! `serde_json::Value`. It must not do I/O or read the clock; what a script
//! sees is its arguments and the functions registered here.

pub mod cases;
pub mod inputs;
mod scan;
mod words;

/// The rhai types hosts use with [`Rules::call_dynamic`] in hot loops.
pub use rhai;
pub use scan::{function_offsets, references, roots, Reference};
pub use words::{describe_eval_error, describe_parse_error, line_col};

use rhai::{Dynamic, Engine, Module, OptimizationLevel, Scope, AST};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A rule failed. Every variant names where the rule came from.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("规则 {origin} 被中止：{message}")]
    Limit { origin: String, message: String },
    #[error("规则 {origin} 出错：{message}")]
    Runtime { origin: String, message: String },
    #[error("规则 {origin} 中没有 {arity} 个参数的函数 `{function}`")]
    NoSuchFunction {
        origin: String,
        function: String,
        arity: usize,
    },
    #[error("规则 {origin} 返回的值无法使用：{message}")]
    Conversion { origin: String, message: String },
}

/// A syntax error in a script or expression: 1-based line and column of the source given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Sandbox limits. The defaults allow a per-person rule over a few hundred
/// fields and a fan-out list of 100,000 items, and stop a runaway loop in
/// well under a second.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_fn_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_fn_expr_depth: 32,
            max_string_size: 1 << 20,
            max_array_size: 100_000,
            max_map_size: 10_000,
        }
    }
}

/// The names every expression may read. Which ones hold a value depends on
/// where the expression is evaluated (`signal` in signal handlers, `result`
/// in activity handlers, `item` in `for_each`); unset ones are `()`.
pub const CONTEXT_NAMES: &[&str] = &[
    "input", "vars", "signal", "actor", "result", "error", "item", "now",
];

/// One compiled script of `rules/`.
#[derive(Debug)]
struct Script {
    origin: String,
    source: String,
    ast: AST,
    functions: BTreeMap<String, Vec<usize>>,
    /// Parameter names of each function (by name and arity).
    params: BTreeMap<(String, usize), Vec<String>>,
    /// What the script's top level evaluated to, registered as its module.
    module: Option<rhai::Shared<Module>>,
}

/// The rule engine: a sandboxed rhai Engine with every script of `rules/`
/// registered as a static module named after its file.
pub struct Rules {
    engine: Engine,
    scripts: BTreeMap<String, Script>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("scripts", &self.scripts.keys())
            .finish()
    }
}

/// A compiled expression from a definition, with where it was written.
#[derive(Debug, Clone)]
pub struct Expr {
    pub source: Arc<str>,
    pub origin: Arc<str>,
    ast: Arc<AST>,
    /// Set when the expression is a plain path such as `input.warning_id`
    /// or `signal`: the interpreter reads it from the JSON directly, which
    /// costs a fraction of a rhai evaluation.
    pub path: Option<Arc<[String]>>,
    /// Which [`CONTEXT_NAMES`] it reads (bit i for name i): only those are bound.
    pub roots: u16,
}

/// `root(.field)*` with identifier segments, `root` a context name.
fn plain_path(source: &str) -> Option<Arc<[String]>> {
    let parts: Vec<String> = source.trim().split('.').map(str::to_string).collect();
    let ident = |p: &String| {
        let mut c = p.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
    };
    (CONTEXT_NAMES.contains(&parts[0].as_str()) && parts.iter().all(ident)).then(|| parts.into())
}

/// Values an expression can read, by [`CONTEXT_NAMES`] name.
#[derive(Default)]
pub struct Context {
    scope: Scope<'static>,
}

impl Context {
    pub fn new() -> Self {
        Context {
            scope: Scope::new(),
        }
    }
    /// Bind `name` to a JSON value.
    pub fn set(&mut self, name: &str, value: &Value) -> &mut Self {
        self.set_dynamic(name, to_dynamic(value))
    }
    /// Bind `name` to an already converted value.
    pub fn set_dynamic(&mut self, name: &str, value: Dynamic) -> &mut Self {
        self.scope.set_or_push(name.to_string(), value);
        self
    }
    /// Set `name.field` (a map binding) to `value`, converting only `value`.
    pub fn set_field(&mut self, name: &str, field: &str, value: &Value) {
        if let Some(d) = self.scope.get_mut(name) {
            // A shared value may be cached elsewhere: write to a private copy.
            if d.is_shared() {
                *d = d.flatten_clone();
            }
            if let Some(mut m) = d.write_lock::<rhai::Map>() {
                m.insert(field.into(), to_dynamic(value));
                return;
            }
        }
        let mut m = rhai::Map::new();
        m.insert(field.into(), to_dynamic(value));
        self.set_dynamic(name, m.into());
    }
}

/// Convert a JSON value for a [`Context`] (a direct walk: this runs on every
/// step, and going through serde costs several times more).
pub fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => a.iter().map(to_dynamic).collect::<rhai::Array>().into(),
        Value::Object(m) => {
            let mut out = rhai::Map::new();
            for (k, v) in m {
                out.insert(k.as_str().into(), to_dynamic(v));
            }
            out.into()
        }
    }
}

fn base_engine(limits: &Limits) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_fn_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_modules(64)
        .set_optimization_level(OptimizationLevel::Simple)
        // Scripts may not load other files: modules are the scripts given here.
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .disable_symbol("eval")
        // Comparing a text with a number is an error, never silently false:
        // the operators below must be found before rhai's built-in
        // fallbacks, which answer `false` for any two types that differ.
        .set_fast_operators(false);
    register_mismatches(&mut e);
    e.on_print(|s| tracing::debug!(target: "rules", "print: {s}"));
    e.on_debug(|s, src, pos| tracing::debug!(target: "rules", "debug {src:?} {pos}: {s}"));
    e
}

/// `a op b` for values of two types that cannot be compared: an error
/// naming both values (a text and a number, a flag and a number, …).
fn mismatch(op: &str, a: Dynamic, b: Dynamic) -> Box<rhai::EvalAltResult> {
    rhai::EvalAltResult::ErrorRuntime(
        format!(
            "类型不符：`{op}` 两边是{} 和{}，文本与数字等不同类型的值不能比较",
            words::value_word(&a),
            words::value_word(&b)
        )
        .into(),
        rhai::Position::NONE,
    )
    .into()
}

fn register_mismatches(e: &mut Engine) {
    use rhai::{Array, ImmutableString as Str, Map, FLOAT, INT};
    macro_rules! pair {
        ($a:ty, $b:ty) => {
            for op in ["==", "!=", "<", "<=", ">", ">="] {
                e.register_fn(
                    op,
                    move |a: $a, b: $b| -> Result<bool, Box<rhai::EvalAltResult>> {
                        Err(mismatch(op, Dynamic::from(a), Dynamic::from(b)))
                    },
                );
            }
        };
    }
    macro_rules! against {
        ($a:ty; $($b:ty),*) => { $( pair!($a, $b); pair!($b, $a); )* };
    }
    // Numbers compare with each other and texts with characters (rhai's
    // own operators); `()` compares with anything (`x == ()`).
    against!(INT; Str, bool, char, Array, Map);
    against!(FLOAT; Str, bool, char, Array, Map);
    against!(Str; bool, Array, Map);
    against!(bool; char, Array, Map);
    against!(char; Array, Map);
    against!(Array; Map);
}

fn syntax(e: &rhai::ParseError) -> SyntaxError {
    SyntaxError {
        line: e.1.line().unwrap_or(1),
        col: e.1.position().unwrap_or(1),
        message: words::describe_parse_error(&e.0),
    }
}

fn is_limit(e: &rhai::EvalAltResult) -> bool {
    use rhai::EvalAltResult as E;
    matches!(
        e,
        E::ErrorTooManyOperations(..)
            | E::ErrorStackOverflow(..)
            | E::ErrorDataTooLarge(..)
            | E::ErrorTooManyModules(..)
            | E::ErrorTooManyVariables(..)
    )
}

fn eval_error(origin: &str, e: Box<rhai::EvalAltResult>) -> Error {
    let inner = unwrap_fn_error(&e);
    let mut message = words::describe_eval_error(inner);
    let pos = inner.position();
    if let (Some(line), Some(col)) = (pos.line(), pos.position()) {
        message = format!("{message}（第 {line} 行第 {col} 列）");
    }
    if is_limit(inner) {
        return Error::Limit {
            origin: origin.to_string(),
            message,
        };
    }
    Error::Runtime {
        origin: origin.to_string(),
        message,
    }
}

/// The error where it happened, inside the calls that led there.
pub(crate) fn unwrap_fn_error(e: &rhai::EvalAltResult) -> &rhai::EvalAltResult {
    match e {
        rhai::EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | rhai::EvalAltResult::ErrorInModule(_, inner, _) => unwrap_fn_error(inner),
        other => other,
    }
}

impl Rules {
    /// Compile `scripts` (module name, origin such as `rules/anomaly.rhai`,
    /// source). All syntax errors are returned at once, keyed by module name.
    pub fn build(
        scripts: &[(String, String, String)],
        limits: Limits,
    ) -> Result<Rules, Vec<(String, SyntaxError)>> {
        let mut engine = base_engine(&limits);
        let mut errors = Vec::new();
        let mut compiled = BTreeMap::new();
        for (name, origin, source) in scripts {
            match engine.compile(source) {
                Ok(ast) => {
                    let mut functions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
                    let mut params = BTreeMap::new();
                    for f in ast.iter_functions() {
                        functions
                            .entry(f.name.to_string())
                            .or_default()
                            .push(f.params.len());
                        params.insert(
                            (f.name.to_string(), f.params.len()),
                            f.params.iter().map(|p| p.to_string()).collect(),
                        );
                    }
                    compiled.insert(
                        name.clone(),
                        Script {
                            origin: origin.clone(),
                            source: source.clone(),
                            ast,
                            functions,
                            params,
                            module: None,
                        },
                    );
                }
                Err(e) => errors.push((name.clone(), syntax(&e))),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (name, script) in compiled.iter_mut() {
            // Top-level statements run once here, inside the same limits.
            match Module::eval_ast_as_new(Scope::new(), &script.ast, &engine) {
                Ok(module) => {
                    let module: rhai::Shared<Module> = module.into();
                    engine.register_static_module(name.as_str(), module.clone());
                    script.module = Some(module);
                }
                Err(e) => errors.push((
                    name.clone(),
                    SyntaxError {
                        line: e.position().line().unwrap_or(1),
                        col: e.position().position().unwrap_or(1),
                        message: eval_error(&script.origin, e).to_string(),
                    },
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Rules {
            engine,
            scripts: compiled,
        })
    }

    /// Does script `module` define `function` taking `arity` arguments?
    pub fn has_function(&self, module: &str, function: &str, arity: Option<usize>) -> bool {
        self.scripts
            .get(module)
            .and_then(|s| s.functions.get(function))
            .is_some_and(|a| arity.is_none_or(|n| a.contains(&n)))
    }

    pub fn has_module(&self, module: &str) -> bool {
        self.scripts.contains_key(module)
    }

    /// The names of the rule modules (scripts).
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.scripts.keys().map(String::as_str)
    }

    /// Where script `module` came from (`rules/anomaly.rhai`).
    pub fn origin(&self, module: &str) -> Option<&str> {
        self.scripts.get(module).map(|s| s.origin.as_str())
    }

    /// The text script `module` was compiled from.
    pub fn source(&self, module: &str) -> Option<&str> {
        self.scripts.get(module).map(|s| s.source.as_str())
    }

    /// The functions of script `module`: name and arities.
    pub fn functions(&self, module: &str) -> Vec<(String, usize)> {
        self.scripts
            .get(module)
            .map(|s| {
                s.functions
                    .iter()
                    .flat_map(|(n, a)| a.iter().map(move |a| (n.clone(), *a)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Parameter names of `module::function` with `arity` arguments.
    pub fn params(&self, module: &str, function: &str, arity: usize) -> Option<&[String]> {
        self.scripts
            .get(module)?
            .params
            .get(&(function.to_string(), arity))
            .map(Vec::as_slice)
    }

    /// Compile one expression of a definition. `origin` names it in errors.
    pub fn compile_expr(&self, source: &str, origin: String) -> Result<Expr, SyntaxError> {
        // No scope at compile time: the optimiser would fold the names into constants.
        let ast = self
            .engine
            .compile_expression(source)
            .map_err(|e| syntax(&e))?;
        Ok(Expr {
            source: source.into(),
            origin: origin.into(),
            ast: Arc::new(ast),
            path: plain_path(source),
            roots: roots(source, CONTEXT_NAMES),
        })
    }

    /// Evaluate an expression with the given context.
    pub fn eval(&self, expr: &Expr, ctx: &mut Context) -> Result<Value, Error> {
        let d = self.eval_dynamic(expr, ctx)?;
        from_dynamic(&expr.origin, &d)
    }

    /// Evaluate an expression that must yield a boolean.
    pub fn eval_bool(&self, expr: &Expr, ctx: &mut Context) -> Result<bool, Error> {
        let d = self.eval_dynamic(expr, ctx)?;
        d.as_bool().map_err(|t| Error::Conversion {
            origin: expr.origin.to_string(),
            message: format!("`{}` gave {t}, expected true or false", expr.source),
        })
    }

    fn eval_dynamic(&self, expr: &Expr, ctx: &mut Context) -> Result<Dynamic, Error> {
        self.engine
            .eval_ast_with_scope::<Dynamic>(&mut ctx.scope, &expr.ast)
            .map_err(|e| eval_error(&expr.origin, e))
    }

    /// Call `module::function(args...)` from Rust (activities use this to run
    /// per-person rules). Arguments and result go through serde.
    pub fn call(&self, module: &str, function: &str, args: &[Value]) -> Result<Value, Error> {
        let d = self.call_dynamic(module, function, args.iter().map(to_dynamic).collect())?;
        let origin = self
            .scripts
            .get(module)
            .map(|s| s.origin.as_str())
            .unwrap_or(module);
        from_dynamic(origin, &d)
    }

    /// As [`Rules::call`] with already converted arguments, for hot loops.
    pub fn call_dynamic(
        &self,
        module: &str,
        function: &str,
        args: Vec<Dynamic>,
    ) -> Result<Dynamic, Error> {
        let script = self
            .scripts
            .get(module)
            .ok_or_else(|| Error::NoSuchFunction {
                origin: module.to_string(),
                function: function.to_string(),
                arity: args.len(),
            })?;
        if !self.has_function(module, function, Some(args.len())) {
            return Err(Error::NoSuchFunction {
                origin: script.origin.clone(),
                function: function.to_string(),
                arity: args.len(),
            });
        }
        let mut scope = Scope::new();
        let opts = rhai::CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(true);
        self.engine
            .call_fn_with_options::<Dynamic>(opts, &mut scope, &script.ast, function, args)
            .map_err(|e| eval_error(&script.origin, e))
    }
}

fn from_dynamic(origin: &str, d: &Dynamic) -> Result<Value, Error> {
    rhai::serde::from_dynamic::<Value>(d).map_err(|e| Error::Conversion {
        origin: origin.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(src: &str) -> Rules {
        Rules::build(
            &[("r".into(), "rules/r.rhai".into(), src.into())],
            Limits::default(),
        )
        .expect("compiles")
    }

    #[test]
    fn infinite_loop_is_stopped_with_a_clear_error() {
        let r = rules("fn spin() { loop { } }");
        let e = r.call("r", "spin", &[]).unwrap_err();
        assert!(matches!(e, Error::Limit { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("rules/r.rhai") && text.contains("运算次数超过上限"),
            "{text}"
        );
    }

    #[test]
    fn oversized_string_is_stopped_with_a_clear_error() {
        let r = rules("fn grow() { let s = \"x\"; loop { s += s; } }");
        let e = r.call("r", "grow", &[]).unwrap_err();
        assert!(matches!(e, Error::Limit { .. }), "{e:?}");
        assert!(e.to_string().contains("rules/r.rhai"), "{e}");
        assert!(e.to_string().contains("超过上限"), "{e}");
    }

    #[test]
    fn deep_recursion_is_stopped() {
        let r = rules("fn down(n) { down(n + 1) }");
        let e = r.call("r", "down", &[json!(0)]).unwrap_err();
        assert!(matches!(e, Error::Limit { .. }), "{e:?}");
    }

    #[test]
    fn no_file_or_module_access() {
        let e = Rules::build(
            &[(
                "r".into(),
                "rules/r.rhai".into(),
                "import \"/etc/passwd\" as p;".into(),
            )],
            Limits::default(),
        )
        .unwrap_err();
        assert!(
            e[0].1.message.contains("passwd") || e[0].1.message.contains("module"),
            "{e:?}"
        );
        let e = Rules::build(
            &[(
                "r".into(),
                "rules/r.rhai".into(),
                "fn f() { eval(\"1\") }".into(),
            )],
            Limits::default(),
        )
        .unwrap_err();
        assert!(e[0].1.message.contains("eval"), "{e:?}");
        let r = rules("fn f() { timestamp() }");
        assert!(r.call("r", "f", &[]).is_err(), "no clock in the sandbox");
    }

    #[test]
    fn expressions_call_rule_modules() {
        let r = rules("fn double(x) { x * 2 }");
        let e = r
            .compile_expr("r::double(input.n) + 1", "test".into())
            .unwrap();
        let mut ctx = Context::new();
        ctx.set("input", &json!({"n": 20}));
        assert_eq!(r.eval(&e, &mut ctx).unwrap(), json!(41));
    }

    #[test]
    fn context_names_are_bound_at_evaluation_not_folded_at_compile_time() {
        // Regression: compiling with a scope of unit constants made the
        // optimiser fold `${signal}` into `()`, losing disposal payloads.
        let r = rules("");
        let e = r.compile_expr("signal", "test".into()).unwrap();
        let mut ctx = Context::new();
        ctx.set("signal", &json!({"a": 1}));
        assert_eq!(r.eval(&e, &mut ctx).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn context_name_positions_are_fixed() {
        // The interpreter's VARS_BIT and ITEM_BIT rely on these positions.
        assert_eq!((CONTEXT_NAMES[1], CONTEXT_NAMES[6]), ("vars", "item"));
    }

    #[test]
    fn plain_paths_are_recognised() {
        let p = |s: &str| plain_path(s).map(|p| p.join("."));
        assert_eq!(p("input.warning_id").as_deref(), Some("input.warning_id"));
        assert_eq!(p(" signal ").as_deref(), Some("signal"));
        assert!(p("vars.n + 1").is_none());
        assert!(p("other.x").is_none());
        assert!(p("vars.x.len()").is_none());
    }

    #[test]
    fn a_text_compared_with_a_number_is_an_error_at_run_time() {
        let r = rules(
            "fn lt(p) { p.doses < \"2\" }\nfn eq(p) { p.doses == \"2\" }\nfn ok(p) { p.doses < 2.5 && p.missing == () && p.code != \"red\" && p.missing ?? 1 == 1 }",
        );
        let p = json!({"doses": 1, "code": "green"});
        let e = r
            .call("r", "lt", std::slice::from_ref(&p))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("类型不符")
                && e.contains("`<`")
                && e.contains("文本 \"2\"")
                && e.contains("第 1 行"),
            "{e}"
        );
        assert!(r.call("r", "eq", std::slice::from_ref(&p)).is_err());
        assert_eq!(r.call("r", "ok", &[p]).unwrap(), json!(true));
        // The same holds in expressions of definitions.
        let x = r.compile_expr("input.n > \"3\"", "test".into()).unwrap();
        let mut ctx = Context::new();
        ctx.set("input", &json!({"n": 4}));
        assert!(r.eval(&x, &mut ctx).is_err());
    }

    #[test]
    fn syntax_errors_carry_script_positions() {
        let e = Rules::build(
            &[(
                "r".into(),
                "rules/r.rhai".into(),
                "fn ok() { 1 }\nfn bad( { }".into(),
            )],
            Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e[0].1.line, 2);
    }
}
