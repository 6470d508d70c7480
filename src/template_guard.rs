//! What a handlebars text from the repository may contain before it is compiled: WukongSet
//! template values ([`crate::fleet`]) and template overrides ([`crate::render`]) both pass
//! through [`check`].
//!
//! handlebars-rust has no depth limit: its parser (pest) and its renderer recurse once per
//! nested block, sub-expression and partial, so `{{#*inline "p"}}{{> p}}{{/inline}}{{> p}}`, a
//! template that includes itself, or a hundred thousand nested `(add (add …))` overflow the
//! stack and abort the process (issue #13, finding 2). So partials and decorators (inline
//! partials among them) are refused — a fleet's two templates and its template values have no
//! use for them — and nesting is bounded, by a linear scan of the text that does not recurse.
//!
//! Pure; depends on nothing else in the crate.

/// Deepest nesting of blocks (`{{#if}}` in `{{#each}}` …), and of sub-expressions within one
/// mustache, a template may have. The shipped VirtualMachine template nests three blocks deep;
/// 32 leaves room for any hand-written template while keeping the recursion of handlebars'
/// parser and renderer far from the stack's end.
pub const MAX_NESTING: usize = 32;

/// Why a text is refused, and where (1-based line and column in the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Refuse partials, decorators and nesting deeper than [`MAX_NESTING`]. A text this check
/// passes may still fail to compile; handlebars then says why.
pub fn check(text: &str) -> Result<(), Refused> {
    let bytes = text.as_bytes();
    let refuse = |at: usize, message: String| {
        let (line, column) = line_column(text, at);
        Err(Refused {
            line,
            column,
            message,
        })
    };
    let mut blocks = 0usize;
    let mut i = 0;
    while let Some(found) = text[i..].find("{{") {
        let start = i + found;
        // `\{{` is a literal `{{`
        if start > 0 && bytes[start - 1] == b'\\' {
            i = start + 2;
            continue;
        }
        let mut j = start + 2;
        if text[j..].starts_with("!--") {
            i = text[j..].find("--}}").map_or(text.len(), |e| j + e + 4);
            continue;
        }
        if text[j..].starts_with('!') {
            i = text[j..].find("}}").map_or(text.len(), |e| j + e + 2);
            continue;
        }
        while j < bytes.len() && bytes[j] == b'{' {
            j += 1;
        }
        let skip_space = |mut k: usize| {
            while k < bytes.len() && bytes[k].is_ascii_whitespace() {
                k += 1;
            }
            k
        };
        j = skip_space(j);
        if j < bytes.len() && bytes[j] == b'~' {
            j = skip_space(j + 1);
        }
        match bytes.get(j) {
            Some(b'>') => {
                return refuse(
                    start,
                    "partials (`{{>`) are not allowed: a partial can include itself and recurse forever".into(),
                );
            }
            Some(b'*') => {
                return refuse(start, "decorators (`{{*`) are not allowed: they define partials, which can recurse forever".into());
            }
            Some(b'#') => {
                let k = skip_space(j + 1);
                match bytes.get(k) {
                    Some(b'>') => {
                        return refuse(
                            start,
                            "partial blocks (`{{#>`) are not allowed: a partial can include itself and recurse forever".into(),
                        );
                    }
                    Some(b'*') => {
                        return refuse(
                            start,
                            "inline partials and decorator blocks (`{{#*`) are not allowed: a partial can include itself and recurse forever".into(),
                        );
                    }
                    _ => {}
                }
                blocks += 1;
                if blocks > MAX_NESTING {
                    return refuse(
                        start,
                        format!("blocks are nested deeper than {MAX_NESTING} levels"),
                    );
                }
            }
            Some(b'/') => blocks = blocks.saturating_sub(1),
            _ => {}
        }
        // The rest of the mustache: sub-expressions, string literals, `[segment]` keys.
        let mut parens = 0usize;
        let mut k = j;
        let mut end = None;
        while k < bytes.len() {
            match bytes[k] {
                quote @ (b'"' | b'\'') => {
                    k += 1;
                    while k < bytes.len() && bytes[k] != quote {
                        if bytes[k] == b'\\' {
                            k += 1;
                        }
                        k += 1;
                    }
                }
                b'[' => {
                    while k < bytes.len() && bytes[k] != b']' {
                        k += 1;
                    }
                }
                b'(' => {
                    parens += 1;
                    if parens > MAX_NESTING {
                        return refuse(
                            k,
                            format!("sub-expressions are nested deeper than {MAX_NESTING} levels"),
                        );
                    }
                }
                b')' => parens = parens.saturating_sub(1),
                b'}' if bytes.get(k + 1) == Some(&b'}') => {
                    end = Some(k + 2);
                    break;
                }
                _ => {}
            }
            k += 1;
        }
        match end {
            Some(e) => i = e,
            // Not closed: handlebars reports it.
            None => break,
        }
    }
    Ok(())
}

/// 1-based line and column (in characters) of byte `at` of `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_templates_pass() {
        for ok in [
            "plain text",
            "{{name}} {{json labels}} {{#if a}}{{#each b}}{{this}}{{/each}}{{/if}}",
            "{{add (mul INDEX 2) 4}}",
            "{{! a comment with {{> nothing}} }}",
            "{{!-- {{> still a comment}} --}}",
            "\\{{> not a partial}}",
            "{{lookup this \"}}{{>\"}}",
            include_str!("../templates/virtualmachine.yaml.hbs"),
            include_str!("../templates/network-attachment-definition.yaml.hbs"),
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn partials_decorators_and_deep_nesting_are_refused() {
        let deep_blocks = "{{#if a}}".repeat(MAX_NESTING + 1);
        let deep_parens = format!(
            "{{{{x {}1{}}}}}",
            "(add ".repeat(100_000),
            ")".repeat(100_000)
        );
        for (bad, line, column, wants) in [
            (
                "{{#*inline \"p\"}}{{> p}}{{/inline}}{{> p}}",
                1,
                1,
                "inline partials",
            ),
            ("a\n  {{> virtualmachine.yaml.hbs}}", 2, 3, "partials"),
            ("{{~ >p}}", 1, 1, "partials"),
            ("{{#> layout}}x{{/layout}}", 1, 1, "partial blocks"),
            ("{{* deco}}", 1, 1, "decorators"),
            (
                deep_blocks.as_str(),
                1,
                9 * MAX_NESTING + 1,
                "blocks are nested",
            ),
            (
                deep_parens.as_str(),
                1,
                5 * MAX_NESTING + 5,
                "sub-expressions are nested",
            ),
        ] {
            let e = check(bad).unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{e}");
            assert!(e.message.contains(wants), "{e}");
        }
    }
}
