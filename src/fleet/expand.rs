//! WukongSet template expansion: `${INDEX}`, `${NAME}`, `${SET}`, `${NAMESPACE}`,
//! `${REPLICAS}`, integer arithmetic (`${INDEX*2+100}`) and zero padding (`${INDEX:03}`).
//!
//! Each `${…}` is translated into a handlebars expression over registered helpers (`add`,
//! `sub`, `mul`, `div`, `mod`, `pad`), so plain handlebars (`{{INDEX}}`, `{{add INDEX 1}}`)
//! works in the same strings. Expansion runs on the scalar strings of the already parsed YAML,
//! never on YAML text, so a variable's value can never change a document's structure. Write
//! `$${` for a literal `${` and `\{{` for a literal `{{`.

use std::collections::HashMap;

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::json;
use serde_yaml::Value;

use super::yaml::Path;

/// The variables a template may use.
pub(crate) const VARIABLES: [&str; 5] = ["INDEX", "NAME", "SET", "NAMESPACE", "REPLICAS"];

/// Values of the variables for one instance.
pub(crate) struct Vars<'a> {
    pub index: u32,
    pub name: &'a str,
    pub set: &'a str,
    pub namespace: &'a str,
    pub replicas: u32,
}

/// Expands template values, compiling each distinct string once (a 10,000-replica set
/// renders the same few strings 10,000 times).
pub(crate) struct Expander {
    hb: Handlebars<'static>,
    /// string → registered template name, or the message of why it does not compile.
    compiled: HashMap<String, Result<String, String>>,
}

impl Expander {
    pub fn new() -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        for (name, op) in [
            ("add", Op::Add),
            ("sub", Op::Sub),
            ("mul", Op::Mul),
            ("div", Op::Div),
            ("mod", Op::Mod),
        ] {
            hb.register_helper(name, Box::new(Arith(op)));
        }
        hb.register_helper("pad", Box::new(Pad));
        Expander {
            hb,
            compiled: HashMap::new(),
        }
    }

    /// Expand every string value (not keys) of `value`. Problems are pushed with the path of
    /// the string that caused them, relative to `path`.
    pub fn expand(
        &mut self,
        value: &Value,
        vars: &Vars,
        path: &Path,
        errors: &mut Vec<(Path, String)>,
    ) -> Value {
        match value {
            Value::String(s) => match self.expand_str(s, vars) {
                Ok(out) => Value::String(out),
                Err(e) => {
                    errors.push((path.clone(), e));
                    value.clone()
                }
            },
            Value::Sequence(items) => Value::Sequence(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.expand(v, vars, &path.index(i), errors))
                    .collect(),
            ),
            Value::Mapping(map) => Value::Mapping(
                map.iter()
                    .map(|(k, v)| {
                        let p = match k {
                            Value::String(k) => path.key(k),
                            _ => path.clone(),
                        };
                        (k.clone(), self.expand(v, vars, &p, errors))
                    })
                    .collect(),
            ),
            Value::Tagged(t) => {
                let mut t = t.clone();
                t.value = self.expand(&t.value, vars, path, errors);
                Value::Tagged(t)
            }
            other => other.clone(),
        }
    }

    fn expand_str(&mut self, s: &str, vars: &Vars) -> Result<String, String> {
        if !s.contains("${") && !s.contains("{{") {
            return Ok(s.to_owned());
        }
        let name = match self.compiled.get(s) {
            Some(entry) => entry.clone(),
            None => {
                let entry = self.compile(s);
                self.compiled.insert(s.to_owned(), entry.clone());
                entry
            }
        }?;
        let data = json!({
            "INDEX": vars.index,
            "NAME": vars.name,
            "SET": vars.set,
            "NAMESPACE": vars.namespace,
            "REPLICAS": vars.replicas,
        });
        self.hb
            .render(&name, &data)
            .map_err(|e| format!("cannot expand {}: {}", quote(s), describe(&e)))
    }

    fn compile(&mut self, s: &str) -> Result<String, String> {
        let source = translate(s).map_err(|e| format!("cannot expand {}: {e}", quote(s)))?;
        crate::template_guard::check(&source)
            .map_err(|e| format!("cannot expand {}: {}", quote(s), e.message))?;
        let name = format!("t{}", self.compiled.len());
        self.hb
            .register_template_string(&name, source)
            .map_err(|e| {
                format!(
                    "cannot expand {}: invalid handlebars expression: {}",
                    quote(s),
                    e.reason()
                )
            })?;
        Ok(name)
    }
}

/// Quote a template string for a message, shortened if long.
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        let short: String = s.chars().take(MAX).collect();
        format!("`{short}…`")
    } else {
        format!("`{s}`")
    }
}

fn describe(e: &RenderError) -> String {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(v)) => {
            format!("unknown variable `{v}` (known: {})", VARIABLES.join(", "))
        }
        RenderErrorReason::Other(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Translate `${…}` expressions into handlebars; everything else is passed through.
fn translate(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len() + 16);
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "`${` is not closed by `}`".to_owned())?;
            out.push_str(&to_handlebars(&tail[..end])?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// One `${…}` body into a handlebars mustache.
fn to_handlebars(body: &str) -> Result<String, String> {
    let (expr, format) = match body.split_once(':') {
        Some((e, f)) => (e, Some(f)),
        None => (body, None),
    };
    let tokens = tokenize(expr)?;
    let mut p = ExprParser { tokens, pos: 0 };
    let (ast, _) = p.sum(0)?;
    if p.pos != p.tokens.len() {
        return Err(format!("unexpected `{}` in `${{{body}}}`", p.tokens[p.pos]));
    }
    let inner = ast.to_hbs(true);
    match format {
        None => Ok(format!("{{{{{inner}}}}}")),
        Some(f) => {
            let width = f
                .strip_prefix('0')
                .and_then(|w| w.parse::<u8>().ok())
                .filter(|w| *w > 0)
                .ok_or_else(|| {
                    format!("unsupported format `:{f}` (use `:0N` to zero-pad to N digits)")
                })?;
            Ok(format!("{{{{pad {} {width}}}}}", ast.to_hbs(false)))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Int(i64),
    Var(String),
    Op(char),
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Int(n) => write!(f, "{n}"),
            Token::Var(v) => f.write_str(v),
            Token::Op(c) => write!(f, "{c}"),
        }
    }
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            let n = digits
                .parse()
                .map_err(|_| format!("number `{digits}` is too large"))?;
            tokens.push(Token::Int(n));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            if !VARIABLES.contains(&name.as_str()) {
                return Err(format!(
                    "unknown variable `{name}` (known: {})",
                    VARIABLES.join(", ")
                ));
            }
            tokens.push(Token::Var(name));
        } else if "+-*/%()".contains(c) {
            tokens.push(Token::Op(c));
            i += 1;
        } else {
            return Err(format!("unexpected character `{c}` in `${{{expr}}}`"));
        }
    }
    if tokens.is_empty() {
        return Err("empty expression `${}`".to_owned());
    }
    Ok(tokens)
}

enum Ast {
    Int(i64),
    Var(String),
    Neg(Box<Ast>),
    Bin(Op, Box<Ast>, Box<Ast>),
}

impl Ast {
    /// Handlebars form; `top` omits the parentheses a sub-expression needs.
    fn to_hbs(&self, top: bool) -> String {
        let wrap = |s: String| if top { s } else { format!("({s})") };
        match self {
            Ast::Int(n) => n.to_string(),
            Ast::Var(v) => v.clone(),
            Ast::Neg(a) => wrap(format!("sub 0 {}", a.to_hbs(false))),
            Ast::Bin(op, a, b) => wrap(format!(
                "{} {} {}",
                op.helper(),
                a.to_hbs(false),
                b.to_hbs(false)
            )),
        }
    }
}

/// Deepest nesting an arithmetic expression may have (parentheses, unary minus, and chains
/// of operators, each of which nests one handlebars sub-expression deeper). The parser, the
/// translation and handlebars all recurse once per level; real expressions nest two or three
/// levels (`${(INDEX+1)*2}`), and `${` followed by ten thousand `-` must be refused, not
/// overflow the stack.
const MAX_EXPR_DEPTH: usize = 16;

fn too_deep() -> String {
    format!("the expression is nested deeper than {MAX_EXPR_DEPTH} levels")
}

struct ExprParser {
    tokens: Vec<Token>,
    pos: usize,
}

impl ExprParser {
    fn peek_op(&self) -> Option<char> {
        match self.tokens.get(self.pos) {
            Some(Token::Op(c)) => Some(*c),
            _ => None,
        }
    }

    // Each function takes the nesting level it is called at and returns the tree with its
    // height; both are kept within MAX_EXPR_DEPTH, so the recursion is bounded.

    fn sum(&mut self, level: usize) -> Result<(Ast, usize), String> {
        let (mut left, mut height) = self.product(level)?;
        while let Some(c @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            let (right, h) = self.product(level)?;
            let op = if c == '+' { Op::Add } else { Op::Sub };
            left = Ast::Bin(op, Box::new(left), Box::new(right));
            height = height.max(h) + 1;
            if height > MAX_EXPR_DEPTH {
                return Err(too_deep());
            }
        }
        Ok((left, height))
    }

    fn product(&mut self, level: usize) -> Result<(Ast, usize), String> {
        let (mut left, mut height) = self.unary(level)?;
        while let Some(c @ ('*' | '/' | '%')) = self.peek_op() {
            self.pos += 1;
            let (right, h) = self.unary(level)?;
            let op = match c {
                '*' => Op::Mul,
                '/' => Op::Div,
                _ => Op::Mod,
            };
            left = Ast::Bin(op, Box::new(left), Box::new(right));
            height = height.max(h) + 1;
            if height > MAX_EXPR_DEPTH {
                return Err(too_deep());
            }
        }
        Ok((left, height))
    }

    fn unary(&mut self, level: usize) -> Result<(Ast, usize), String> {
        if level >= MAX_EXPR_DEPTH {
            return Err(too_deep());
        }
        if self.peek_op() == Some('-') {
            self.pos += 1;
            let (inner, h) = self.unary(level + 1)?;
            return Ok((Ast::Neg(Box::new(inner)), h + 1));
        }
        let tok = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match tok {
            Some(Token::Int(n)) => Ok((Ast::Int(n), 0)),
            Some(Token::Var(v)) => Ok((Ast::Var(v), 0)),
            Some(Token::Op('(')) => {
                let inner = self.sum(level + 1)?;
                if self.peek_op() != Some(')') {
                    return Err("missing `)`".to_owned());
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(t) => Err(format!("unexpected `{t}`")),
            None => Err("expression ends too early".to_owned()),
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl Op {
    fn helper(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Mod => "mod",
        }
    }

    fn apply(self, a: i64, b: i64) -> Result<i64, String> {
        let r = match self {
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
            Op::Div | Op::Mod if b == 0 => return Err("division by zero".to_owned()),
            Op::Div => a.checked_div(b),
            Op::Mod => a.checked_rem(b),
        };
        r.ok_or_else(|| "integer overflow".to_owned())
    }
}

fn int_param(h: &Helper, i: usize) -> Result<i64, RenderError> {
    let v = h
        .param(i)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("arithmetic", i))?;
    v.value().as_i64().ok_or_else(|| {
        RenderErrorReason::Other(format!("`{}` needs integers, got {}", h.name(), v.value())).into()
    })
}

struct Arith(Op);

impl HelperDef for Arith {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let (a, b) = (int_param(h, 0)?, int_param(h, 1)?);
        let r = self.0.apply(a, b).map_err(RenderErrorReason::Other)?;
        Ok(ScopedJson::Derived(json!(r)))
    }
}

struct Pad;

impl HelperDef for Pad {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let (v, width) = (int_param(h, 0)?, int_param(h, 1)?);
        let width = usize::try_from(width).unwrap_or(0);
        let s = if v < 0 {
            format!("-{:0w$}", v.unsigned_abs(), w = width.saturating_sub(1))
        } else {
            format!("{v:0width$}")
        };
        Ok(ScopedJson::Derived(json!(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(s: &str, index: u32) -> Result<String, String> {
        let vars = Vars {
            index,
            name: &format!("web-{index}"),
            set: "web",
            namespace: "prod",
            replicas: 3,
        };
        let mut errs = Vec::new();
        let out = Expander::new().expand(&Value::String(s.into()), &vars, &Path::root(), &mut errs);
        match errs.pop() {
            Some((_, e)) => Err(e),
            None => Ok(out.as_str().unwrap_or_default().to_owned()),
        }
    }

    #[test]
    fn variables_arithmetic_and_padding() {
        let cases = [
            ("192.168.1.${INDEX+100}/24", 2, "192.168.1.102/24"),
            ("${INDEX}", 7, "7"),
            ("${NAME}.${NAMESPACE}.svc", 1, "web-1.prod.svc"),
            ("${SET}-of-${REPLICAS}", 0, "web-of-3"),
            ("${INDEX*2+1}", 4, "9"),
            ("${(INDEX+1)*2}", 4, "10"),
            ("${INDEX - 10}", 4, "-6"),
            ("${-INDEX}", 4, "-4"),
            ("${INDEX % 2}", 5, "1"),
            ("${INDEX / 2}", 5, "2"),
            ("host-${INDEX:03}", 7, "host-007"),
            ("${INDEX+1:02}", 9, "10"),
            ("{{INDEX}} and {{add INDEX 1}}", 1, "1 and 2"),
            ("price $5 and $${literal}", 1, "price $5 and ${literal}"),
            ("no variables", 1, "no variables"),
            ("\\{{not handlebars}}", 1, "{{not handlebars}}"),
        ];
        for (input, index, want) in cases {
            assert_eq!(expand(input, index).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            (
                "${IDX}",
                "cannot expand `${IDX}`: unknown variable `IDX` (known: INDEX, NAME, SET, NAMESPACE, REPLICAS)",
            ),
            ("${INDEX/0}", "cannot expand `${INDEX/0}`: division by zero"),
            (
                "${INDEX*9999999999*9999999999}",
                "cannot expand `${INDEX*9999999999*9999999999}`: integer overflow",
            ),
            (
                "${INDEX+}",
                "cannot expand `${INDEX+}`: expression ends too early",
            ),
            (
                "${INDEX",
                "cannot expand `${INDEX`: `${` is not closed by `}`",
            ),
            (
                "${INDEX:x}",
                "cannot expand `${INDEX:x}`: unsupported format `:x` (use `:0N` to zero-pad to N digits)",
            ),
            (
                "${NAME+1}",
                "cannot expand `${NAME+1}`: `add` needs integers, got \"web-1\"",
            ),
            (
                "{{nope}}",
                "cannot expand `{{nope}}`: unknown variable `nope` (known: INDEX, NAME, SET, NAMESPACE, REPLICAS)",
            ),
            ("${}", "cannot expand `${}`: empty expression `${}`"),
            (
                "${INDEX 1}",
                "cannot expand `${INDEX 1}`: unexpected `1` in `${INDEX 1}`",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, 1), Err(want.to_owned()), "{input}");
        }
    }

    #[test]
    fn recursion_over_input_is_bounded() {
        let minus = format!("${{{}INDEX}}", "-".repeat(10_000));
        let parens = format!("${{{}INDEX{}}}", "(".repeat(100_000), ")".repeat(100_000));
        let chain = format!("${{INDEX{}}}", "+1".repeat(1_000));
        let nested_hbs = format!(
            "{{{{{}INDEX{}}}}}",
            "add (".repeat(50_000),
            " 1)".repeat(50_000)
        );
        for (input, wants) in [
            (minus.as_str(), "nested deeper than 16 levels"),
            (parens.as_str(), "nested deeper than 16 levels"),
            (chain.as_str(), "nested deeper than 16 levels"),
            (
                nested_hbs.as_str(),
                "sub-expressions are nested deeper than 32 levels",
            ),
            (
                "{{#*inline \"p\"}}{{> p}}{{/inline}}{{> p}}",
                "inline partials and decorator blocks",
            ),
            ("{{> t0}}", "partials (`{{>`) are not allowed"),
        ] {
            let e = expand(input, 1).unwrap_err();
            assert!(e.contains(wants), "{e}");
        }
        // within the bounds, deep expressions still work
        assert_eq!(expand("${((((INDEX+1))))*2}", 3).as_deref(), Ok("8"));
        assert_eq!(
            expand(&format!("${{INDEX{}}}", "+1".repeat(16)), 0).as_deref(),
            Ok("16")
        );
    }

    #[test]
    fn values_cannot_change_structure() {
        let hostile = "a: b\n- c\n{{{x}}}: ]";
        let vars = Vars {
            index: 0,
            name: hostile,
            set: "s",
            namespace: "n",
            replicas: 1,
        };
        let doc: Value = serde_yaml::from_str("labels:\n  name: \"${NAME}\"\n").unwrap();
        let mut errs = Vec::new();
        let out = Expander::new().expand(&doc, &vars, &Path::root(), &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(out["labels"]["name"].as_str(), Some(hostile));
        assert_eq!(out.as_mapping().map(|m| m.len()), Some(1));
    }
}
