//! rhai's errors and type names in the words a policy officer reads
//! (Chinese), with the offending token quoted.

use rhai::{Dynamic, EvalAltResult as E, ParseErrorType as P};

/// 1-based line and column of byte `offset` in `src` (columns count characters).
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map_or(before, |(_, l)| l)
        .chars()
        .count()
        + 1;
    (line, col)
}

/// A rhai type name in Chinese.
pub fn type_word(name: &str) -> &'static str {
    match name {
        "i64" | "int" | "integer" => "整数",
        "f64" | "float" | "decimal" => "小数",
        "string" | "ImmutableString" | "&str" | "String" => "文本",
        "bool" => "真假值",
        "char" => "字符",
        "array" | "Array" => "列表",
        "map" | "Map" => "映射",
        "()" => "空值 ()",
        "Fn" | "FnPtr" => "函数",
        "range" | "range=" => "范围",
        _ => "其他类型的值",
    }
}

/// A value as it appears in a message: its type and, for scalars, itself.
pub fn value_word(v: &Dynamic) -> String {
    let t = type_word(v.type_name());
    if v.is_string() {
        let s = v.clone().into_string().unwrap_or_default();
        let s: String = s.chars().take(40).collect();
        format!("{t} \"{s}\"")
    } else if v.is_int() || v.is_float() || v.is_bool() || v.is_char() {
        format!("{t} {v}")
    } else {
        t.to_string()
    }
}

/// A syntax error in Chinese, the offending token quoted.
pub fn describe_parse_error(e: &P) -> String {
    match e {
        P::UnexpectedEOF => "脚本在语句写完之前就结束了（缺少 `}`、`)` 或 `;`？）".into(),
        P::BadInput(l) => describe_lex_error(l),
        P::UnknownOperator(o) => format!("未知的运算符 `{o}`"),
        P::MissingToken(t, why) => format!("缺少 `{t}`（{}）", zh_why(why)),
        P::MissingSymbol(s) => format!("缺少 `{s}`"),
        P::MalformedIndexExpr(s) => format!("下标写法有误：{s}"),
        P::MalformedCapture(s) => format!("捕获写法有误：{s}"),
        P::DuplicatedProperty(p) => format!("映射中的键 `{p}` 出现了两次"),
        P::DuplicatedVariable(v) => format!("变量 `{v}` 重复"),
        P::WrongSwitchIntegerCase => "switch 的整数分支写法有误".into(),
        P::WrongSwitchDefaultCase => "switch 的默认分支 `_` 必须放在最后".into(),
        P::WrongSwitchCaseCondition => "switch 的默认分支不能带条件".into(),
        P::PropertyExpected => "`.` 后面应写属性名".into(),
        P::VariableExpected => "这里应写变量名".into(),
        P::ForbiddenVariable(v) => format!("不能使用变量名 `{v}`"),
        P::Reserved(w) => format!("`{w}` 是保留字，不能使用"),
        P::MismatchedType(want, got) => format!(
            "类型不符：应为{}，写的是{}",
            type_word(want),
            type_word(got)
        ),
        P::ExprExpected(what) => format!("这里应写{}", zh_expr(what)),
        P::WrongDocComment => "文档注释位置不对".into(),
        P::WrongFnDefinition => "函数只能定义在脚本最外层".into(),
        P::FnDuplicatedDefinition(f, n) => format!("函数 `{f}`（{n} 个参数）定义了两次"),
        P::FnMissingName => "函数缺少名称".into(),
        P::FnMissingParams(f) => format!("函数 `{f}` 缺少参数列表 `( )`"),
        P::FnDuplicatedParam(f, p) => format!("函数 `{f}` 的参数 `{p}` 重复"),
        P::FnMissingBody(f) => format!("函数 `{f}` 缺少函数体 `{{ }}`"),
        P::WrongExport => "`export` 只能写在脚本最外层".into(),
        P::AssignmentToConstant(c) => format!("不能给常量 `{c}` 赋值"),
        P::AssignmentToInvalidLHS(_) => "赋值号 `=` 左边不能被赋值".into(),
        P::VariableExists(v) => format!("变量 `{v}` 已经定义"),
        P::VariableUndefined(v) => format!("未定义的变量 `{v}`"),
        P::ModuleUndefined(m) => format!("未知的模块 `{m}`"),
        P::ExprTooDeep => "表达式嵌套太深".into(),
        P::LiteralTooLarge(t, n) => format!("{t} 太大（上限 {n}）"),
        P::LoopBreak => "`break`/`continue` 只能写在循环里".into(),
        other => format!("语法错误：{other}"),
    }
}

fn describe_lex_error(e: &rhai::LexError) -> String {
    use rhai::LexError as L;
    match e {
        L::UnexpectedInput(s) => format!("这里不应出现 `{s}`"),
        L::UnterminatedString => "文本缺少结尾的引号".into(),
        L::StringTooLong(n) => format!("文本太长（上限 {n}）"),
        L::MalformedEscapeSequence(s) => format!("转义写法有误 `{s}`"),
        L::MalformedNumber(s) => format!("数字写法有误 `{s}`"),
        L::MalformedChar(s) => format!("字符写法有误 `{s}`"),
        L::MalformedIdentifier(s) => format!("名称写法有误 `{s}`"),
        L::ImproperSymbol(s, _) => format!("`{s}` 不能这样写"),
        other => format!("无法识别的写法：{other}"),
    }
}

fn zh_why(why: &str) -> String {
    // rhai says "to close ...", "for a matching ( in this expression", …
    if let Some(rest) = why.strip_prefix("for a matching ") {
        return format!(
            "与前面的 `{}` 配对",
            rest.split_whitespace().next().unwrap_or("")
        );
    }
    if why.contains("to terminate this statement") || why.contains("to terminate") {
        return "语句之间用 `;` 分隔".into();
    }
    why.to_string()
}

fn zh_expr(what: &str) -> String {
    match what {
        "expression" => "表达式".into(),
        "a boolean expression" | "boolean expression" => "条件表达式".into(),
        other => format!("“{other}”"),
    }
}

/// A run-time error in Chinese, the offending token quoted, without position.
pub fn describe_eval_error(e: &E) -> String {
    match e {
        E::ErrorInFunctionCall(_, _, inner, _) => describe_eval_error(inner),
        E::ErrorRuntime(v, _) => {
            if v.is_string() {
                v.clone().into_string().unwrap_or_default()
            } else {
                format!("脚本报错：{v}")
            }
        }
        E::ErrorPropertyNotFound(p, _) => format!("未知属性 `{p}`"),
        E::ErrorVariableNotFound(v, _) => format!("未定义的变量 `{v}`"),
        E::ErrorFunctionNotFound(sig, _) => {
            // `doses (())` — reading a field of () gives this.
            let name = sig.split([' ', '(']).next().unwrap_or(sig);
            if sig.contains("(())") || sig.contains("((),") {
                format!("不能对空值 () 取 `{name}`：前面的属性不存在或没有值（可写 `?.` 或 `??`）")
            } else {
                format!("找不到函数 `{sig}`")
            }
        }
        E::ErrorInModule(_, inner, _) => describe_eval_error(inner),
        E::ErrorIndexNotFound(i, _) => format!("没有下标 `{i}`"),
        E::ErrorModuleNotFound(m, _) => format!("未知的模块 `{m}`"),
        E::ErrorMismatchDataType(want, got, _) => {
            format!(
                "类型不符：应为{}，实际是{}",
                type_word(want),
                type_word(got)
            )
        }
        E::ErrorMismatchOutputType(want, got, _) => {
            format!(
                "返回值类型不符：应为{}，实际是{}",
                type_word(want),
                type_word(got)
            )
        }
        E::ErrorIndexingType(t, _) => format!("{t} 不能用下标或属性访问"),
        E::ErrorArrayBounds(len, i, _) => format!("下标 {i} 越界：列表只有 {len} 项"),
        E::ErrorStringBounds(len, i, _) => format!("下标 {i} 越界：文本只有 {len} 个字"),
        E::ErrorFor(_) => "`for` 只能遍历列表、范围或文本".into(),
        E::ErrorDataRace(v, _) => format!("变量 `{v}` 正在被使用"),
        E::ErrorAssignmentToConstant(c, _) => format!("不能给常量 `{c}` 赋值"),
        E::ErrorDotExpr(s, _) => format!("属性访问出错：{s}"),
        E::ErrorArithmetic(s, _) => match s.split_once(": ") {
            Some((what, expr)) if what.starts_with("Division by zero") => {
                format!("计算出错：除数为零 `{expr}`")
            }
            Some((what, expr)) if what.contains("flow") => format!("计算出错：数值溢出 `{expr}`"),
            _ => format!("计算出错：{s}"),
        },
        E::ErrorTooManyOperations(_) => "运算次数超过上限（循环没有结束？）".into(),
        E::ErrorDataTooLarge(what, _) => format!("{what} 超过上限"),
        E::ErrorStackOverflow(_) => "函数调用嵌套太深".into(),
        E::ErrorTooManyModules(_) => "模块太多".into(),
        E::ErrorTooManyVariables(_) => "变量太多".into(),
        E::ErrorParsing(p, _) => describe_parse_error(p),
        E::ErrorTerminated(..) => "脚本被中止".into(),
        other => format!("脚本出错：{other}"),
    }
}
