//! TBEL's grammar (MVEL's statement and expression syntax as ThingsBoard
//! documents it), parsed by recursive descent with precedence climbing and
//! written out as JavaScript as it is read. Names are resolved once the
//! whole script is read: each function's undeclared assignments become its
//! `var`s, and a name read but never assigned anywhere it is visible is an
//! error at the place it is read.

use std::collections::{BTreeSet, HashSet};

use super::lex::{Tok, Token};
use super::TbelError;

mod expr;

/// MVEL operators outside the subset, refused with their name.
const MVEL_OPERATORS: &[&str] = &[
    "contains",
    "is",
    "instanceof",
    "soundslike",
    "strsim",
    "convertable_to",
    "in",
];

/// Words that start constructs TBEL does not have (or ThingsBoard forbids).
const REFUSED_WORDS: &[&str] = &[
    "try", "catch", "throw", "switch", "case", "class", "import", "with", "assert", "isdef",
    "macro", "proto", "this", "typeof", "delete", "let", "const",
];

/// Primitive type names allowed in `new T[n]` and typed declarations.
const PRIMITIVES: &[&str] = &[
    "int", "long", "short", "byte", "double", "float", "char", "boolean",
];

#[derive(Debug)]
enum Stmt {
    /// An expression statement (the script's value when it is last).
    Expr(String),
    If {
        cond: String,
        then: Vec<Stmt>,
        els: Option<Vec<Stmt>>,
    },
    Block(Vec<Stmt>),
    /// Anything else, already JavaScript.
    Code(String),
}

#[derive(Debug, Default)]
struct Scope {
    parent: Option<usize>,
    declared: HashSet<String>,
    assigned: BTreeSet<String>,
    reads: Vec<(String, u32, u32)>,
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    functions: HashSet<String>,
    scopes: Vec<Scope>,
    current: usize,
    depth: u32,
    /// Functions defined so far (a name may be defined once).
    defined: HashSet<String>,
    /// Whether statements being read are at the top of a function body
    /// (where a function may be defined).
    top: bool,
}

/// What an expression is, for assignment and calls.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    /// Not assignable.
    Value,
    /// A script variable (its TBEL name).
    Var(String),
    /// `a.b` or `a[i]`.
    Member,
    /// A Java class (`Math`), usable only before `.member`.
    Class(&'static str),
}

struct Expr {
    js: String,
    place: Place,
}

impl Expr {
    fn value(js: String) -> Self {
        Self {
            js,
            place: Place::Value,
        }
    }
}

fn var(name: &str) -> String {
    format!("${name}")
}

/// A JavaScript string literal. `*` is escaped, so that no string in the
/// output can contain the `/*VARSn*/` placeholders.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string())
        .to_string()
        .replace('*', "\\u002a")
}

/// How deep statements and expressions may nest (the parser recurses).
const MAX_DEPTH: u32 = 64;

pub fn program(toks: Vec<Token>, params: &[&str]) -> Result<String, TbelError> {
    // Functions may be called before they are defined: collect their names.
    let functions = toks
        .windows(3)
        .filter_map(|w| match (&w[0].tok, &w[1].tok, &w[2].tok) {
            (Tok::Ident(k), Tok::Ident(n), Tok::Punct("(")) if k == "function" || k == "def" => {
                Some(n.clone())
            }
            _ => None,
        })
        .collect();
    let root = Scope {
        declared: params.iter().map(|p| p.to_string()).collect(),
        ..Scope::default()
    };
    let mut p = Parser {
        toks,
        pos: 0,
        functions,
        scopes: vec![root],
        current: 0,
        depth: 0,
        defined: HashSet::new(),
        top: true,
    };
    let mut body = Vec::new();
    while p.peek() != &Tok::Eof {
        if let Some(s) = p.statement()? {
            body.push(s);
        }
    }
    let mut js = String::from("\"use strict\";");
    js.push_str("/*VARS0*/");
    emit(&body, true, &mut js);
    let js = p.resolve(js)?;
    let params: Vec<String> = params.iter().map(|p| var(p)).collect();
    Ok(format!("(function({}) {{\n{js}\n}})", params.join(", ")))
}

/// Writes statements; the last one's value is returned when `tail`.
fn emit(stmts: &[Stmt], tail: bool, out: &mut String) {
    for (i, s) in stmts.iter().enumerate() {
        let last = tail && i + 1 == stmts.len();
        match s {
            Stmt::Expr(e) if last => {
                out.push_str("return ");
                out.push_str(e);
                out.push_str(";\n");
            }
            Stmt::Expr(e) => {
                out.push_str(e);
                out.push_str(";\n");
            }
            Stmt::If { cond, then, els } => {
                out.push_str("if ((");
                out.push_str(cond);
                out.push_str(")) {\n");
                emit(then, last, out);
                out.push('}');
                if let Some(e) = els {
                    out.push_str(" else {\n");
                    emit(e, last, out);
                    out.push('}');
                }
                out.push('\n');
            }
            Stmt::Block(b) => {
                out.push_str("{\n");
                emit(b, last, out);
                out.push_str("}\n");
            }
            Stmt::Code(c) => {
                out.push_str(c);
                out.push('\n');
            }
        }
    }
}

impl Parser {
    // ---- tokens ------------------------------------------------------

    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }

    fn here(&self) -> (u32, u32) {
        let t = &self.toks[self.pos.min(self.toks.len() - 1)];
        (t.line, t.col)
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, TbelError> {
        let (l, c) = self.here();
        Err(TbelError::at(l, c, message))
    }

    fn describe(t: &Tok) -> String {
        match t {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Num(n) => format!("the number {n}"),
            Tok::Str(_) => "a string".into(),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Eof => "the end of the script".into(),
        }
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }

    fn eat(&mut self, p: &str) -> bool {
        if self.is(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), TbelError> {
        if self.eat(p) {
            Ok(())
        } else {
            let found = Self::describe(self.peek());
            self.error(format!("expected `{p}`, found {found}"))
        }
    }

    fn ident(&mut self) -> Result<String, TbelError> {
        match self.peek().clone() {
            Tok::Ident(s) if !is_keyword(&s) => {
                self.pos += 1;
                Ok(s)
            }
            t => self.error(format!("expected a name, found {}", Self::describe(&t))),
        }
    }

    // ---- names -------------------------------------------------------

    fn declare(&mut self, name: &str) {
        self.scopes[self.current].declared.insert(name.to_string());
    }

    fn assign(&mut self, name: &str) {
        self.scopes[self.current].assigned.insert(name.to_string());
    }

    /// Replaces each function's `/*VARSn*/` with its implicit `var`s and
    /// checks that every name read is visible where it is read.
    fn resolve(&self, mut js: String) -> Result<String, TbelError> {
        let visible = |mut i: usize, name: &str| loop {
            let s = &self.scopes[i];
            if s.declared.contains(name) || s.assigned.contains(name) {
                return true;
            }
            match s.parent {
                Some(p) => i = p,
                None => return false,
            }
        };
        for (i, s) in self.scopes.iter().enumerate() {
            for (name, l, c) in &s.reads {
                if !visible(i, name) && !self.functions.contains(name) {
                    return Err(TbelError::at(
                        *l,
                        *c,
                        format!("unknown variable `{name}` (never assigned)"),
                    ));
                }
            }
            let implicit: Vec<String> = s
                .assigned
                .iter()
                .filter(|n| !s.declared.contains(*n) && !s.parent.is_some_and(|p| visible(p, n)))
                .map(|n| var(n))
                .collect();
            let decl = if implicit.is_empty() {
                String::new()
            } else {
                format!("var {};", implicit.join(", "))
            };
            js = js.replacen(&format!("/*VARS{i}*/"), &decl, 1);
        }
        Ok(js)
    }

    // ---- statements --------------------------------------------------

    fn block_or_statement(&mut self) -> Result<Vec<Stmt>, TbelError> {
        self.enter()?;
        let top = std::mem::replace(&mut self.top, false);
        let r = self.block_or_statement_inner();
        self.top = top;
        self.depth -= 1;
        r
    }

    fn block_or_statement_inner(&mut self) -> Result<Vec<Stmt>, TbelError> {
        if self.eat("{") {
            let mut body = Vec::new();
            while !self.eat("}") {
                if self.peek() == &Tok::Eof {
                    return self.error("expected `}`, found the end of the script");
                }
                if let Some(s) = self.statement()? {
                    body.push(s);
                }
            }
            Ok(body)
        } else {
            Ok(self.statement()?.into_iter().collect())
        }
    }

    /// Ends an expression statement: `;`, or nothing before `}` or the end.
    fn end_statement(&mut self) -> Result<(), TbelError> {
        if self.eat(";") || self.is("}") || self.peek() == &Tok::Eof {
            return Ok(());
        }
        if let Tok::Ident(w) = self.peek() {
            if MVEL_OPERATORS.contains(&w.as_str()) {
                return self.error(format!("the MVEL operator `{w}` is not supported"));
            }
        }
        let found = Self::describe(self.peek());
        self.error(format!("expected `;`, found {found}"))
    }

    fn paren_expr(&mut self) -> Result<String, TbelError> {
        self.expect("(")?;
        let e = self.expression()?;
        self.expect(")")?;
        Ok(e.js)
    }

    fn statement(&mut self) -> Result<Option<Stmt>, TbelError> {
        if self.eat(";") {
            return Ok(None);
        }
        if self.is("{") && !self.map_ahead() {
            return Ok(Some(Stmt::Block(self.block_or_statement()?)));
        }
        let word = match self.peek() {
            Tok::Ident(w) => w.clone(),
            _ => return self.expression_statement().map(Some),
        };
        if REFUSED_WORDS.contains(&word.as_str()) {
            return self.error(format!("`{word}` is not part of TBEL"));
        }
        Ok(Some(match word.as_str() {
            "var" => {
                self.pos += 1;
                let code = self.declarations()?;
                self.end_statement()?;
                Stmt::Code(code)
            }
            "if" => {
                self.pos += 1;
                let cond = self.paren_expr()?;
                let then = self.block_or_statement()?;
                let els = if self.is_word("else") {
                    self.pos += 1;
                    Some(self.block_or_statement()?)
                } else {
                    None
                };
                Stmt::If { cond, then, els }
            }
            "foreach" => {
                self.pos += 1;
                self.for_each()?
            }
            "for" => {
                self.pos += 1;
                self.for_loop()?
            }
            "while" | "until" => {
                self.pos += 1;
                let cond = self.paren_expr()?;
                let body = self.loop_body()?;
                let test = if word == "while" {
                    format!("({cond})")
                } else {
                    format!("!({cond})")
                };
                Stmt::Code(format!("while ({test}) {body}"))
            }
            "do" => {
                self.pos += 1;
                let body = self.loop_body()?;
                let test = match self.peek() {
                    Tok::Ident(w) if w == "while" => "",
                    Tok::Ident(w) if w == "until" => "!",
                    t => {
                        let found = Self::describe(t);
                        return self.error(format!("expected `while` or `until`, found {found}"));
                    }
                };
                self.pos += 1;
                let cond = self.paren_expr()?;
                self.end_statement()?;
                Stmt::Code(format!("do {body} while ({test}({cond}));"))
            }
            "return" => {
                self.pos += 1;
                if self.eat(";") || self.is("}") || self.peek() == &Tok::Eof {
                    Stmt::Code("return null;".into())
                } else {
                    let e = self.expression()?;
                    self.end_statement()?;
                    Stmt::Code(format!("return {};", e.js))
                }
            }
            "break" | "continue" => {
                self.pos += 1;
                self.end_statement()?;
                Stmt::Code(format!("{word};"))
            }
            "function" | "def" => {
                self.pos += 1;
                self.function()?
            }
            _ if self.typed_declaration_ahead() => {
                self.pos += 1;
                while self.eat("[") {
                    self.expect("]")?;
                }
                let code = self.declarations()?;
                self.end_statement()?;
                Stmt::Code(code)
            }
            _ => self.expression_statement()?,
        }))
    }

    fn expression_statement(&mut self) -> Result<Stmt, TbelError> {
        let e = self.expression()?;
        self.end_statement()?;
        Ok(Stmt::Expr(e.js))
    }

    /// `Type name =` / `Type name;` / `Type[] name`: a Java-typed variable.
    fn typed_declaration_ahead(&self) -> bool {
        let mut n = 1;
        while matches!(self.peek_at(n), Tok::Punct("["))
            && matches!(self.peek_at(n + 1), Tok::Punct("]"))
        {
            n += 2;
        }
        matches!(self.peek_at(n), Tok::Ident(w) if !is_keyword(w))
            && matches!(self.peek_at(n + 1), Tok::Punct("=" | ";" | ","))
    }

    /// `{` starting a map literal rather than a block: `{}` followed by
    /// the end of a statement, or `{ key :`.
    fn map_ahead(&self) -> bool {
        matches!(
            (self.peek_at(1), self.peek_at(2)),
            (Tok::Ident(_) | Tok::Str(_) | Tok::Num(_), Tok::Punct(":"))
        ) || (matches!(self.peek_at(1), Tok::Punct("}"))
            && matches!(self.peek_at(2), Tok::Eof | Tok::Punct(";")))
    }

    /// `a = 1, b` after `var` or a type.
    fn declarations(&mut self) -> Result<String, TbelError> {
        let mut parts = Vec::new();
        loop {
            let name = self.ident()?;
            self.declare(&name);
            if self.eat("=") {
                let e = self.assignment()?;
                parts.push(format!("{} = {}", var(&name), e.js));
            } else {
                parts.push(format!("{} = null", var(&name)));
            }
            if !self.eat(",") {
                break;
            }
        }
        Ok(format!("var {};", parts.join(", ")))
    }

    fn loop_body(&mut self) -> Result<String, TbelError> {
        let body = self.block_or_statement()?;
        let mut js = String::from("{\n");
        emit(&body, false, &mut js);
        js.push('}');
        Ok(js)
    }

    /// `foreach (x : coll)` / `foreach (Type x : coll)`.
    fn for_each(&mut self) -> Result<Stmt, TbelError> {
        self.expect("(")?;
        let js = self.for_each_rest()?;
        Ok(Stmt::Code(js))
    }

    /// After `foreach (` or `for (`: `[Type] x : coll) body`.
    fn for_each_rest(&mut self) -> Result<String, TbelError> {
        if matches!(self.peek_at(1), Tok::Ident(_)) {
            self.pos += 1; // the element's type
        }
        let name = self.ident()?;
        self.declare(&name);
        self.expect(":")?;
        let coll = self.expression()?;
        self.expect(")")?;
        let body = self.loop_body()?;
        Ok(format!(
            "for (var {} of __tb.iter({})) {body}",
            var(&name),
            coll.js
        ))
    }

    fn is_for_each(&self) -> bool {
        matches!(
            (self.peek_at(1), self.peek_at(2), self.peek_at(3)),
            (Tok::Punct(":"), _, _) | (Tok::Ident(_), Tok::Punct(":"), _)
        ) && matches!(self.peek(), Tok::Ident(_))
    }

    fn for_loop(&mut self) -> Result<Stmt, TbelError> {
        self.expect("(")?;
        if self.is_for_each() {
            return Ok(Stmt::Code(self.for_each_rest()?));
        }
        let init = if self.is(";") {
            String::new()
        } else if self.is_word("var") || self.typed_declaration_ahead() {
            self.pos += 1;
            self.declarations()?.trim_end_matches(';').to_string()
        } else {
            self.expression_list()?
        };
        self.expect(";")?;
        let cond = if self.is(";") {
            "true".to_string()
        } else {
            format!("({})", self.expression()?.js)
        };
        self.expect(";")?;
        let update = if self.is(")") {
            String::new()
        } else {
            self.expression_list()?
        };
        self.expect(")")?;
        let body = self.loop_body()?;
        Ok(Stmt::Code(format!("for ({init}; {cond}; {update}) {body}")))
    }

    fn expression_list(&mut self) -> Result<String, TbelError> {
        let mut parts = vec![self.expression()?.js];
        while self.eat(",") {
            parts.push(self.expression()?.js);
        }
        Ok(parts.join(", "))
    }

    fn function(&mut self) -> Result<Stmt, TbelError> {
        if !self.top {
            return self.error("a function is defined at the top of the script, not in a block or another function");
        }
        let (l, c) = self.here();
        let name = self.ident()?;
        if !self.defined.insert(name.clone()) {
            return Err(TbelError::at(
                l,
                c,
                format!("the function `{name}` is defined twice"),
            ));
        }
        self.expect("(")?;
        let parent = self.current;
        self.scopes.push(Scope {
            parent: Some(parent),
            ..Scope::default()
        });
        let index = self.scopes.len() - 1;
        self.current = index;
        let mut params = Vec::new();
        if !self.eat(")") {
            loop {
                if matches!(self.peek_at(1), Tok::Ident(_)) {
                    self.pos += 1; // a parameter's type
                }
                let (l, c) = self.here();
                let p = self.ident()?;
                if params.contains(&var(&p)) {
                    return Err(TbelError::at(
                        l,
                        c,
                        format!("the parameter `{p}` is named twice"),
                    ));
                }
                self.declare(&p);
                params.push(var(&p));
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        if !self.is("{") {
            let found = Self::describe(self.peek());
            return self.error(format!("expected `{{`, found {found}"));
        }
        let body = self.block_or_statement()?;
        self.current = parent;
        let mut js = format!(
            "function {}({}) {{/*VARS{index}*/\n",
            var(&name),
            params.join(", ")
        );
        emit(&body, true, &mut js);
        js.push('}');
        Ok(Stmt::Code(js))
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "var"
            | "if"
            | "else"
            | "for"
            | "foreach"
            | "while"
            | "until"
            | "do"
            | "return"
            | "break"
            | "continue"
            | "function"
            | "def"
            | "new"
            | "true"
            | "false"
            | "null"
            | "nil"
    )
}
