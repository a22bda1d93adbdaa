//! A small lexer over rhai source finding `module::function(` calls and
//! `root.field` reads, so `compile` can check them against the rules and
//! variables that exist and point at their column. It skips strings and
//! comments and understands nothing else.

/// Something an expression refers to, with its byte offset in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `module::function(` with the number of top-level arguments.
    Call {
        module: String,
        function: String,
        arity: usize,
        offset: usize,
    },
    /// `root.field` where root is a plain identifier.
    Field {
        root: String,
        field: String,
        offset: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path,
    Dot,
    Open,
    Close,
    Comma,
    Other,
}

fn lex(src: &str) -> Vec<(Tok, usize)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if c == b'"' || c == b'\'' || c == b'`' {
            let q = c;
            let start = i;
            i += 1;
            while i < b.len() && b[i] != q {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push((Tok::Other, start));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_string()), start));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            // A float's fraction is not a field access.
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
            }
            out.push((Tok::Other, start));
        } else {
            let tok = match c {
                b':' if b.get(i + 1) == Some(&b':') => {
                    i += 1;
                    Tok::Path
                }
                b'.' => Tok::Dot,
                b'(' | b'[' | b'{' => Tok::Open,
                b')' | b']' | b'}' => Tok::Close,
                b',' => Tok::Comma,
                _ => Tok::Other,
            };
            out.push((tok, i));
            i += 1;
        }
    }
    out
}

/// The references of `src`, in order.
pub fn references(src: &str) -> Vec<Reference> {
    let t = lex(src);
    let mut out = Vec::new();
    for i in 0..t.len() {
        let Tok::Ident(a) = &t[i].0 else { continue };
        // Part of a longer chain (`x.a` or `m::f`) is handled from its head.
        if i > 0 && matches!(t[i - 1].0, Tok::Dot | Tok::Path) {
            continue;
        }
        match (t.get(i + 1).map(|x| &x.0), t.get(i + 2).map(|x| &x.0)) {
            (Some(Tok::Path), Some(Tok::Ident(f)))
                if matches!(t.get(i + 3).map(|x| &x.0), Some(Tok::Open)) =>
            {
                out.push(Reference::Call {
                    module: a.clone(),
                    function: f.clone(),
                    arity: arity(&t[i + 4..]),
                    offset: t[i].1,
                });
            }
            // `x.len()` is a method call, not a field.
            (Some(Tok::Dot), Some(Tok::Ident(f)))
                if !matches!(t.get(i + 3).map(|x| &x.0), Some(Tok::Open)) =>
            {
                out.push(Reference::Field {
                    root: a.clone(),
                    field: f.clone(),
                    offset: t[i].1,
                });
            }
            _ => {}
        }
    }
    out
}

/// Byte offsets of the names of the functions a script defines
/// (`fn evaluate(` gives `("evaluate", offset of evaluate)`), in order.
pub fn function_offsets(src: &str) -> Vec<(String, usize)> {
    let t = lex(src);
    t.windows(2)
        .filter_map(|w| match (&w[0].0, &w[1].0) {
            (Tok::Ident(k), Tok::Ident(name)) if k == "fn" => Some((name.clone(), w[1].1)),
            _ => None,
        })
        .collect()
}

/// Bit `i` set when the expression reads `names[i]` as a variable (not as a
/// field, method or module name).
pub fn roots(src: &str, names: &[&str]) -> u16 {
    let t = lex(src);
    let mut bits = 0;
    for i in 0..t.len() {
        let Tok::Ident(a) = &t[i].0 else { continue };
        if i > 0 && matches!(t[i - 1].0, Tok::Dot | Tok::Path) {
            continue;
        }
        if matches!(t.get(i + 1).map(|x| &x.0), Some(Tok::Path)) {
            continue;
        }
        if let Some(k) = names.iter().position(|n| n == a) {
            bits |= 1 << k;
        }
    }
    bits
}

/// Count top-level arguments of a call whose `(` was just consumed.
fn arity(rest: &[(Tok, usize)]) -> usize {
    let mut depth = 0;
    let mut n = 0;
    let mut any = false;
    for (tok, _) in rest {
        match tok {
            Tok::Open => {
                depth += 1;
                any = true;
            }
            Tok::Close if depth == 0 => break,
            Tok::Close => depth -= 1,
            Tok::Comma if depth == 0 => n += 1,
            _ => any = true,
        }
    }
    if any {
        n + 1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_roots() {
        let names = ["input", "vars", "now"];
        assert_eq!(roots("input.a + vars.b", &names), 0b011);
        assert_eq!(roots("x.input + m::vars(now)", &names), 0b100);
    }

    #[test]
    fn finds_calls_and_fields() {
        let r = references(
            "anomaly::evaluate(input.p, [1, 2]) && vars.done != \"a::b(\" && x.len() > 0.5",
        );
        assert_eq!(
            r,
            vec![
                Reference::Call {
                    module: "anomaly".into(),
                    function: "evaluate".into(),
                    arity: 2,
                    offset: 0
                },
                Reference::Field {
                    root: "input".into(),
                    field: "p".into(),
                    offset: 18
                },
                Reference::Field {
                    root: "vars".into(),
                    field: "done".into(),
                    offset: 38
                },
            ]
        );
        assert_eq!(
            references("m::f()"),
            vec![Reference::Call {
                module: "m".into(),
                function: "f".into(),
                arity: 0,
                offset: 0
            }]
        );
    }
}
