//! TBEL's grammar (MVEL's statement and expression syntax as ThingsBoard
//! documents it), parsed by recursive descent with precedence climbing and
//! written out as JavaScript as it is read. Names are resolved once the
//! whole script is read: each function's undeclared assignments become its
//! `var`s, and a name read but never assigned anywhere it is visible is an
//! error at the place it is read.

use std::collections::{BTreeSet, HashSet};

use super::lex::{Tok, Token};
use super::{TbelError, CLASSES, FUNCTIONS};

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

    // ---- expressions -------------------------------------------------

    fn expression(&mut self) -> Result<Expr, TbelError> {
        self.assignment()
    }

    fn enter(&mut self) -> Result<(), TbelError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!("nested more than {MAX_DEPTH} deep"));
        }
        Ok(())
    }

    fn assignment(&mut self) -> Result<Expr, TbelError> {
        self.enter()?;
        let r = self.assignment_inner();
        self.depth -= 1;
        r
    }

    fn assignment_inner(&mut self) -> Result<Expr, TbelError> {
        let (l, c) = self.here();
        let target = self.ternary()?;
        let op = match self.peek() {
            Tok::Punct(
                p @ ("=" | "+=" | "-=" | "*=" | "/=" | "%=" | "&=" | "|=" | "^=" | "<<=" | ">>="
                | ">>>="),
            ) => *p,
            _ => return Ok(target),
        };
        self.pos += 1;
        let value = self.assignment()?;
        match &target.place {
            Place::Var(name) => {
                let name = name.clone();
                self.assign(&name);
                // The read recorded for the target is not a read.
                if op == "=" {
                    if let Some(i) = self.scopes[self.current]
                        .reads
                        .iter()
                        .rposition(|(n, ..)| *n == name)
                    {
                        self.scopes[self.current].reads.remove(i);
                    }
                }
            }
            Place::Member => {}
            _ => return Err(TbelError::at(l, c, "this cannot be assigned to")),
        }
        Ok(Expr::value(format!("({} {op} {})", target.js, value.js)))
    }

    fn ternary(&mut self) -> Result<Expr, TbelError> {
        let cond = self.binary(0)?;
        if !self.eat("?") {
            return Ok(cond);
        }
        let a = self.assignment()?;
        self.expect(":")?;
        let b = self.assignment()?;
        Ok(Expr::value(format!(
            "(({}) ? {} : {})",
            cond.js, a.js, b.js
        )))
    }

    fn binary(&mut self, min: u8) -> Result<Expr, TbelError> {
        let mut left = self.unary()?;
        while let Tok::Punct(p) = self.peek() {
            let (op, prec) = match binary_precedence(p) {
                Some(prec) if prec >= min => (*p, prec),
                _ => break,
            };
            if op == "===" || op == "!==" {
                return self.error(format!("`{op}` is JavaScript; TBEL compares with `==`"));
            }
            self.pos += 1;
            let right = self.binary(prec + 1)?;
            let js = match op {
                "==" => format!("__tb.eq({}, {})", left.js, right.js),
                "!=" => format!("!__tb.eq({}, {})", left.js, right.js),
                _ => format!("({} {op} {})", left.js, right.js),
            };
            left = Expr::value(js);
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, TbelError> {
        let (l, c) = self.here();
        for op in ["!", "-", "+", "~", "++", "--"] {
            if self.eat(op) {
                self.enter()?;
                let e = self.unary();
                self.depth -= 1;
                let e = e?;
                if op == "++" || op == "--" {
                    return self.step(e, op, true, l, c);
                }
                return Ok(Expr::value(if op == "!" {
                    format!("(!{})", e.js)
                } else {
                    format!("({op}{})", e.js)
                }));
            }
        }
        let e = self.postfix()?;
        if self.is("++") || self.is("--") {
            let op = if self.eat("++") {
                "++"
            } else {
                self.expect("--").map(|_| "--")?
            };
            return self.step(e, op, false, l, c);
        }
        Ok(e)
    }

    fn step(&mut self, e: Expr, op: &str, pre: bool, l: u32, c: u32) -> Result<Expr, TbelError> {
        match &e.place {
            Place::Var(name) => {
                let name = name.clone();
                self.assign(&name);
            }
            Place::Member => {}
            _ => return Err(TbelError::at(l, c, format!("`{op}` needs a variable"))),
        }
        Ok(Expr::value(if pre {
            format!("({op}{})", e.js)
        } else {
            format!("({}{op})", e.js)
        }))
    }

    fn arguments(&mut self) -> Result<Vec<String>, TbelError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expression()?.js);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn postfix(&mut self) -> Result<Expr, TbelError> {
        let mut e = self.primary()?;
        // After `.?`, the rest of the chain yields null on a null.
        let mut safe = false;
        loop {
            let (l, c) = self.here();
            if self.is(".") || self.is(".?") {
                if self.eat(".?") {
                    safe = true;
                } else {
                    self.pos += 1;
                }
                let name = match self.next().tok {
                    Tok::Ident(n) => n,
                    t => {
                        return Err(TbelError::at(
                            l,
                            c,
                            format!("expected a name after `.`, found {}", Self::describe(&t)),
                        ))
                    }
                };
                if let Place::Class(class) = e.place {
                    e = self.static_member(class, &name, l, c)?;
                    continue;
                }
                if self.eat("(") {
                    let args = self.arguments()?;
                    let f = if safe { "cn" } else { "c" };
                    let mut js = format!("__tb.{f}({}, {}", e.js, quote(&name));
                    for a in args {
                        js.push_str(", ");
                        js.push_str(&a);
                    }
                    js.push(')');
                    e = Expr::value(js);
                } else if matches!(name.as_str(), "size" | "length" | "empty") {
                    let f = if safe { "pn" } else { "p" };
                    e = Expr::value(format!("__tb.{f}({}, {})", e.js, quote(&name)));
                } else {
                    let dot = if safe { "?." } else { "." };
                    let js = if is_js_name(&name) {
                        format!("{}{dot}{name}", e.js)
                    } else {
                        format!("{}{}[{}]", e.js, if safe { "?." } else { "" }, quote(&name))
                    };
                    e = Expr {
                        js,
                        place: if safe { Place::Value } else { Place::Member },
                    };
                }
            } else if self.eat("[") {
                if let Place::Class(class) = e.place {
                    return Err(TbelError::at(
                        l,
                        c,
                        format!("`{class}[...]` is not supported"),
                    ));
                }
                let i = self.expression()?;
                self.expect("]")?;
                let js = if safe {
                    format!("{}?.[__tb.key({})]", e.js, i.js)
                } else {
                    format!("{}[__tb.key({})]", e.js, i.js)
                };
                e = Expr {
                    js,
                    place: if safe { Place::Value } else { Place::Member },
                };
            } else {
                break;
            }
        }
        if let Place::Class(class) = e.place {
            return self.error(format!(
                "the class `{class}` can only be used as `{class}.member`"
            ));
        }
        Ok(e)
    }

    fn static_member(
        &mut self,
        class: &'static str,
        name: &str,
        l: u32,
        c: u32,
    ) -> Result<Expr, TbelError> {
        let members = CLASSES
            .iter()
            .find(|(n, _)| *n == class)
            .map(|(_, m)| *m)
            .unwrap_or_default();
        if !members.contains(&name) {
            return Err(TbelError::at(
                l,
                c,
                format!("`{class}.{name}` is not supported"),
            ));
        }
        let target = format!("__tb.cls.{class}.{name}");
        if self.eat("(") {
            let args = self.arguments()?;
            Ok(Expr::value(format!("{target}({})", args.join(", "))))
        } else {
            Ok(Expr::value(target))
        }
    }

    fn primary(&mut self) -> Result<Expr, TbelError> {
        let t = self.next();
        let (l, c) = (t.line, t.col);
        match t.tok {
            // `5.toString()`: JavaScript would read `5.` as the number.
            Tok::Num(n) if self.is(".") || self.is(".?") => Ok(Expr::value(format!("({n})"))),
            Tok::Num(n) => Ok(Expr::value(n)),
            Tok::Str(s) => Ok(Expr::value(quote(&s))),
            Tok::Punct("(") => {
                let e = self.expression()?;
                self.expect(")")?;
                Ok(Expr::value(format!("({})", e.js)))
            }
            Tok::Punct("[") => {
                let items = self.items("]")?;
                Ok(Expr::value(format!("[{}]", items.join(", "))))
            }
            Tok::Punct("{") => self.map_or_array(),
            Tok::Ident(w) => self.word(w, l, c),
            other => Err(TbelError::at(
                l,
                c,
                format!("expected a value, found {}", Self::describe(&other)),
            )),
        }
    }

    fn items(&mut self, close: &str) -> Result<Vec<String>, TbelError> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.expression()?.js);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(",")?;
            if self.eat(close) {
                return Ok(items);
            }
        }
    }

    /// `{}` / `{k: v, ...}` (a map) or `{a, b}` (MVEL's inline array).
    fn map_or_array(&mut self) -> Result<Expr, TbelError> {
        if self.eat("}") {
            return Ok(Expr::value("{}".into()));
        }
        let is_map = matches!(self.peek_at(1), Tok::Punct(":"));
        if !is_map {
            let items = self.items("}")?;
            return Ok(Expr::value(format!("[{}]", items.join(", "))));
        }
        let mut parts = Vec::new();
        loop {
            let key = match self.next().tok {
                Tok::Ident(k) | Tok::Str(k) => k,
                Tok::Num(n) => n,
                t => {
                    return self.error(format!("expected a map key, found {}", Self::describe(&t)))
                }
            };
            self.expect(":")?;
            let v = self.expression()?;
            parts.push(format!("[{}]: {}", quote(&key), v.js));
            if self.eat("}") {
                break;
            }
            self.expect(",")?;
            if self.eat("}") {
                break;
            }
        }
        Ok(Expr::value(format!("({{{}}})", parts.join(", "))))
    }

    fn word(&mut self, w: String, l: u32, c: u32) -> Result<Expr, TbelError> {
        match w.as_str() {
            "true" | "false" => return Ok(Expr::value(w)),
            "null" | "nil" => return Ok(Expr::value("null".into())),
            "new" => return self.new_expr(l, c),
            "java" => return self.java_class(l, c),
            _ => {}
        }
        if REFUSED_WORDS.contains(&w.as_str()) || is_keyword(&w) {
            return Err(TbelError::at(l, c, format!("`{w}` is not expected here")));
        }
        if let Some((class, _)) = CLASSES.iter().find(|(n, _)| *n == w) {
            if self.is(".") {
                return Ok(Expr {
                    js: String::new(),
                    place: Place::Class(class),
                });
            }
        }
        if self.eat("(") {
            let args = self.arguments()?;
            if self.functions.contains(&w) {
                return Ok(Expr::value(format!("{}({})", var(&w), args.join(", "))));
            }
            if FUNCTIONS.contains(&w.as_str()) {
                return Ok(Expr::value(format!("__tb.f.{w}({})", args.join(", "))));
            }
            return Err(TbelError::at(l, c, format!("unknown function `{w}`")));
        }
        self.scopes[self.current].reads.push((w.clone(), l, c));
        Ok(Expr {
            js: var(&w),
            place: Place::Var(w),
        })
    }

    /// `java.util.Collections` / `java.lang.Math`: the class.
    fn java_class(&mut self, l: u32, c: u32) -> Result<Expr, TbelError> {
        let mut path = vec!["java".to_string()];
        while self.eat(".") {
            path.push(self.ident()?);
            if let Some((class, _)) = CLASSES.iter().find(|(n, _)| *n == path[path.len() - 1]) {
                return Ok(Expr {
                    js: String::new(),
                    place: Place::Class(class),
                });
            }
        }
        Err(TbelError::at(
            l,
            c,
            format!("the Java class `{}` is not supported", path.join(".")),
        ))
    }

    fn new_expr(&mut self, l: u32, c: u32) -> Result<Expr, TbelError> {
        let mut path = vec![self.ident()?];
        while self.eat(".") {
            path.push(self.ident()?);
        }
        let class = path.join(".");
        if PRIMITIVES.contains(&class.as_str()) && self.eat("[") {
            if self.eat("]") {
                self.expect("{")?;
                let items = self.items("}")?;
                return Ok(Expr::value(format!("[{}]", items.join(", "))));
            }
            let n = self.expression()?;
            self.expect("]")?;
            return Ok(Expr::value(format!(
                "__tb.newArray({}, {})",
                n.js,
                quote(&class)
            )));
        }
        if class == "Date" && self.eat("(") {
            let args = self.arguments()?;
            return Ok(Expr::value(format!("__tb.newDate({})", args.join(", "))));
        }
        Err(TbelError::at(
            l,
            c,
            format!("creating a `{class}` is not allowed (only primitive arrays and Date)"),
        ))
    }
}

fn binary_precedence(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "|" => 3,
        "^" => 4,
        "&" => 5,
        "==" | "!=" | "===" | "!==" => 6,
        "<" | ">" | "<=" | ">=" => 7,
        "<<" | ">>" | ">>>" => 8,
        "+" | "-" => 9,
        "*" | "/" | "%" => 10,
        _ => return None,
    })
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

/// A member name that can follow a `.` in JavaScript unchanged.
fn is_js_name(n: &str) -> bool {
    !matches!(n, "__proto__" | "constructor" | "prototype")
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}
